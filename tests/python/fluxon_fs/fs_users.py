"""The users, scopes and patcher set-up the fluxon_fs tests share (a module of its own, not
`conftest`, so that test files can import it whatever other `conftest` is loaded)."""

from fluxon_py.fluxon_fs import FluxonFsPatcher

USERS = {
    "admin": {"password": "admin-pw-1", "can_manage_users": True},
    "reader": {"password": "reader-pw-1"},
    "writer": {"password": "writer-pw-1"},
    "docs": {"password": "docs-pw-1"},
}
SCOPES = [
    {"export_name": "demo-export", "prefix": "", "mode": "read", "usernames": ["reader"]},
    {"export_name": "demo-export", "prefix": "", "mode": "read_write", "usernames": ["writer"]},
    {"export_name": "demo-export", "prefix": "docs/", "mode": "read_write",
     "usernames": ["docs"]},
]


def configured_patcher(stack, store, user="admin"):
    p = FluxonFsPatcher(store)
    p.set_master_config_yaml(stack.master_yaml())
    p.set_cache_config_yaml(stack.cache_yaml())
    p.set_request_identity(user, USERS[user]["password"])
    return p
