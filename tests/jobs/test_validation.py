import pytest

from llmqueue.jobs.validation import payload_problems


@pytest.mark.parametrize(
    ("kind", "payload", "expected"),
    [
        ("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, []),
        (
            "chat",
            {
                "model": "m",
                "messages": [
                    {"role": "assistant", "tool_calls": [{"id": "1"}]},
                    {"role": "user", "content": [{"type": "text", "text": "x"}]},
                ],
            },
            [],
        ),
        ("chat", {"messages": [{"role": "user", "content": "hi"}]}, ["model: required"]),
        ("chat", {"model": "m"}, ["messages: required"]),
        ("chat", {"model": "m", "messages": []}, ["messages: required"]),
        ("chat", {"model": "m", "messages": ["hi"]}, ["messages[0]: must be an object"]),
        (
            "chat",
            {"model": "m", "messages": [{"role": "boss", "content": "x"}]},
            ["messages[0].role"],
        ),
        ("chat", {"model": "m", "messages": [{"role": "user"}]}, ["messages[0].content: required"]),
        (
            "chat",
            {"model": "m", "messages": [{"role": "user", "content": 3}]},
            ["messages[0].content: must be"],
        ),
        (
            "chat",
            {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
            ["stream:"],
        ),
        ("completion", {"model": "m", "prompt": "once upon"}, []),
        ("completion", {"model": "m"}, ["prompt: required"]),
        ("completion", {"model": "m", "prompt": ""}, ["prompt: required"]),
        ("embedding", {"model": "m", "input": ["a", "b"]}, []),
        ("embedding", {"model": "m", "input": 5}, ["input: required"]),
        ("chat", "not an object", ["must be a JSON object"]),
        (
            "chat",
            {"model": "", "messages": [{"role": "user", "content": "x"}]},
            ["model: required"],
        ),
    ],
)
def test_payload_problems_name_the_field(kind, payload, expected):
    problems = payload_problems(kind, payload)
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problem
