"""The demo project that `seed_demo` creates: tasks that show what Switchyard does."""

from __future__ import annotations

# Python one-liners run with the interpreter on PATH; argv lists, never shell strings.
SLOW_SCRIPT = (
    "import time\n"
    "for i in range(1, 21):\n"
    "    print(f'step {i} of 20: working...', flush=True)\n"
    "    time.sleep(1)\n"
    "print('done', flush=True)\n"
)
FAIL_SCRIPT = (
    "import sys\n"
    "print('checking preconditions...', flush=True)\n"
    "print('error: precondition failed: the demo always fails here', file=sys.stderr)\n"
    "sys.exit(3)\n"
)

DEMO_TASKS = [
    {
        "slug": "hello",
        "name": "Hello",
        "description": "Prints a greeting with the name you give.",
        "spec": {"argv": ["echo", "Hello, {{ name }}!"]},
        "params_schema": [
            {"name": "name", "type": "string", "label": "Name", "required": True,
             "default": "world", "max_length": 200, "help": "Who to greet."}
        ],
        "timeout_seconds": 60,
    },
    {
        "slug": "slow",
        "name": "Slow",
        "description": "Prints a line a second for about 20 seconds: watch the log grow.",
        "spec": {"argv": ["python3", "-u", "-c", SLOW_SCRIPT]},
        "params_schema": [],
        "timeout_seconds": 120,
    },
    {
        "slug": "fail",
        "name": "Fail",
        "description": "Exits with code 3 to show how failures look.",
        "spec": {"argv": ["python3", "-c", FAIL_SCRIPT]},
        "params_schema": [],
        "timeout_seconds": 60,
    },
]
