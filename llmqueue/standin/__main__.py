from llmqueue.standin.server import main

main()
