"""The house rules that keep services thin (STYLE section 2.4), checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_FILES = sorted((ROOT / "services").rglob("*.py"))
SHARED_FILES = sorted((ROOT / "shared").rglob("*.py"))
REDIS_CALLS = {
    "hset", "hget", "hgetall", "hincrby", "lpush", "rpush", "lpop", "rpop", "lrange", "llen",
    "zadd", "zrem", "zrange", "zrangebyscore", "zrevrangebyscore", "zcard", "zscore", "sadd",
    "srem", "smembers", "set", "get", "mget", "delete", "publish", "evalsha", "eval", "blpop",
    "expire", "incr", "exists",
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_shared_never_imports_services() -> None:
    offenders = [p.name for p in SHARED_FILES if any(m.startswith("services") for m in _imports(p))]
    assert offenders == []


def test_no_service_imports_another_service() -> None:
    offenders = []
    for path in SERVICE_FILES:
        own = path.relative_to(ROOT / "services").parts[0]
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] == "services" and len(parts) > 1 and parts[1] != own:
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []


def test_services_never_format_keys() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in SERVICE_FILES if '"tq:' in p.read_text()]
    assert offenders == []


def test_services_never_call_redis_commands_directly() -> None:
    """Only shared/ talks to Redis; services call its functions (redis.exceptions is fine)."""
    offenders = []
    for path in SERVICE_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in REDIS_CALLS
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "redis"
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .redis.{node.func.attr}")
    assert offenders == []


def test_every_module_says_what_it_is_for() -> None:
    missing = [
        str(p.relative_to(ROOT))
        for p in SERVICE_FILES + SHARED_FILES
        if p.name != "__init__.py" and ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert missing == []


def test_every_transition_script_has_a_header_and_a_wrapper() -> None:
    from shared.redis import SCRIPT_NAMES

    for name in SCRIPT_NAMES:
        source = (ROOT / "shared" / "scripts" / f"{name}.lua").read_text()
        assert source.startswith(f"-- {name}"), name
        assert "KEYS[1]" in source.split("\n\n")[0] or "KEYS[1]" in source[:2000], name
