"""The layering rules of the codebase, checked on every import statement.

generators/ is torch only (no discord, no SQL); storage/ is SQLite and files
only; bot/ never imports torch; worker/ never imports discord.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "generators": {"discord", "sqlite3", "sqlite_utils", "storage", "worker", "bot", "aiohttp"},
    "storage": {"torch", "diffusers", "transformers", "discord", "generators", "worker", "bot"},
    "bot": {"torch", "diffusers", "transformers", "generators"},
    "worker": {"discord", "bot"},
}


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno


def test_no_layer_imports_what_it_must_not():
    problems = []
    for package, banned in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for module, line in imported_modules(path):
                if module in banned:
                    problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not problems, "\n".join(problems)


def test_front_door_modules_load_without_torch():
    code = (
        "import sys; import artbot.cli, artbot.config, storage, storage.jobs, worker.jobs, "
        "worker.queue, generators.registry\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('bot') and (ROOT / 'bot' / '__init__.py').exists(): import bot\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]\n"
    ).replace("ROOT", f"__import__('pathlib').Path({str(ROOT)!r})")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
