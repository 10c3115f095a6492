"""The demo project that `seed_demo` creates: tasks that show what Switchyard does."""

from __future__ import annotations

from pathlib import Path

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

# --- pipelines -------------------------------------------------------------------------------

DEV_SCRIPT = (
    "import json, os\n"
    "data = json.load(open(os.environ['SWITCHYARD_INPUT_FILE']))\n"
    "loop = data.get('loop')\n"
    "if loop:\n"
    "    for f in loop['failed']:\n"
    "        print('fixing findings from', loop['from_stage'], ':', f['error'].splitlines()[0])\n"
    "print('DEV: implementing the change for ticket', data['params']['ticket'])\n"
    "json.dump({'patch': 'change-1', 'after_loop': bool(loop)}, open('result.json', 'w'))\n"
)
QA_SCRIPT = (
    "import json, os, sys\n"
    "data = json.load(open(os.environ['SWITCHYARD_INPUT_FILE']))\n"
    "dev = data['stages']['dev']['implement']['result']\n"
    "mode = data['params']['qa_fails']\n"
    "print('QA: testing patch', dev['patch'])\n"
    "if mode == 'always' or (mode == 'once' and not dev['after_loop']):\n"
    "    print('QA finding: test_checkout fails with a KeyError', file=sys.stderr)\n"
    "    json.dump({'passed': 41, 'failed': 1}, open('result.json', 'w'))\n"
    "    sys.exit(1)\n"
    "json.dump({'passed': 42, 'failed': 0}, open('result.json', 'w'))\n"
)
SEC_SCRIPT = "print('SEC: dependency and secret scan clean')\n"
DOCS_SCRIPT = "print('DOCS: changelog and API docs updated')\n"
# The visual-batch step: a real screenshot with headless Chromium (see the script's header).
CAPTURE_SCRIPT = (Path(__file__).parent / "demo_scripts" / "capture.py").read_text()

DEMO_PIPELINES = [
    {
        "slug": "agent-pipeline",
        "name": "Agent pipeline (DEV → QA → SEC → DOCS)",
        "description": "Every change passes DEV, QA, SEC and DOCS; a QA or SEC failure loops "
                       "back to DEV with the findings. By default QA fails once by design.",
        "kind": "pipeline",
        "spec": {"stages": [
            {"name": "dev", "steps": [{"name": "implement",
                                       "command": ["python3", "-c", DEV_SCRIPT]}]},
            {"name": "qa", "steps": [{"name": "test", "command": ["python3", "-c", QA_SCRIPT]}],
             "on_failure": {"goto": "dev", "max_loops": 2}},
            {"name": "sec", "steps": [{"name": "scan", "command": ["python3", "-c",
                                                                   SEC_SCRIPT]}],
             "on_failure": {"goto": "dev", "max_loops": 2}},
            {"name": "docs", "steps": [{"name": "write", "command": ["python3", "-c",
                                                                     DOCS_SCRIPT]}]},
        ]},
        "params_schema": [
            {"name": "ticket", "type": "string", "default": "SW-101", "required": True},
            {"name": "qa_fails", "type": "choice", "choices": ["once", "always", "never"],
             "default": "once", "help": "How the demo's QA stage behaves."},
        ],
        "timeout_seconds": 300,
    },
    {
        "slug": "visual-batch",
        "name": "Visual regression batch",
        "description": "Screenshots pages × viewports with headless Chromium, at most two at "
                       "once. Run it with change=none and mark that run as the baseline; then "
                       "run it with change=tweak (minor) or banner (major) to see the diffs.",
        "kind": "pipeline",
        "spec": {"stages": [
            {"name": "capture", "matrix": {"page": ["home", "pricing", "docs"],
                                           "viewport": ["desktop", "phone"]},
             "max_parallel": 2,
             "steps": [{"name": "shot", "command": ["python3", "-c", CAPTURE_SCRIPT,
                                                    "{{ page }}", "{{ viewport }}",
                                                    "{{ change }}"]}]},
        ]},
        "params_schema": [
            {"name": "change", "type": "choice", "choices": ["none", "tweak", "banner"],
             "default": "none", "label": "Change to the pages",
             "help": "none: as designed; tweak: the logo text is tinted slightly (a minor "
                     "difference); banner: a sale banner appears (a major one)."},
        ],
        "artifact_globs": ["shots/*.png", "page.html"],
        "timeout_seconds": 300,
    },
    {
        "slug": "deploy",
        "name": "Deploy with approval",
        "description": "Builds, then waits until an operator approves the deployment.",
        "kind": "pipeline",
        "spec": {"stages": [
            {"name": "build", "steps": [{"name": "package", "command": [
                "python3", "-c", "print('building release {{ version }}')"]}]},
            {"name": "production", "approval": {"role": "operator", "timeout_seconds": 86400,
                                                "on_timeout": "reject"},
             "steps": [{"name": "ship", "command": [
                 "python3", "-c", "print('deploying {{ version }} to production')"]}]},
        ]},
        "params_schema": [{"name": "version", "type": "string", "default": "1.4.2",
                           "regex": r"[0-9]+\.[0-9]+\.[0-9]+"}],
        "timeout_seconds": 300,
    },
]
