"""Config, store, call order and mount rules, with the seed's messages."""

import os
import re

import pytest

from fs_users import USERS, configured_patcher
from fluxon_py.config import FluxonKvClientConfig
from fluxon_py.fluxon_fs import FluxonFsPatcher
from fluxon_py.kvclient import new_store


def test_config_validates_fields():
    with pytest.raises(ValueError, match="master_addr"):
        FluxonKvClientConfig(master_addr="nohostport")
    with pytest.raises(ValueError, match="request_timeout_secs"):
        FluxonKvClientConfig(master_addr="h:1", request_timeout_secs=0)
    with pytest.raises(ValueError, match="contribute_to_cluster_pool_size"):
        FluxonKvClientConfig(master_addr="h:1", contribute_to_cluster_pool_size=1)
    with pytest.raises(ValueError, match=r"unknown key `kvclient.bogus`"):
        FluxonKvClientConfig.from_dict({"master_addr": "h:1", "bogus": 1})
    cfg = FluxonKvClientConfig(master_addr="127.0.0.1:1", cluster_name="demo-fs-cluster",
                               share_mem_path="/dev/shm/x", instance_key="me")
    assert cfg.cluster_name == "demo-fs-cluster"


def test_new_store_failed_when_master_unreachable():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(RuntimeError, match="^new_store failed"):
        new_store(FluxonKvClientConfig(master_addr=f"127.0.0.1:{port}",
                                       connect_timeout_secs=2))


def test_call_order_is_enforced(fs_stack, store, tmp_path):
    p = FluxonFsPatcher(store)
    with pytest.raises(RuntimeError, match=re.escape("call set_master_config_yaml(...) before "
                                                     "set_cache_config_yaml(...)")):
        p.set_cache_config_yaml(fs_stack.cache_yaml())
    with pytest.raises(RuntimeError, match=re.escape("call set_master_config_yaml(...) before "
                                                     "set_request_identity(...)")):
        p.set_request_identity("admin", USERS["admin"]["password"])
    with pytest.raises(RuntimeError, match=re.escape(
            "call set_request_identity(username, password) before install()")):
        p.install()
    with pytest.raises(ValueError, match="^fluxon_fs cache config is not loaded yet"):
        p.mount_remote_dir(local_mount_dir_abs=str(tmp_path / "m"), export_name="demo-export")
    p.set_master_config_yaml(fs_stack.master_yaml())
    with pytest.raises(RuntimeError, match="fluxon_fs cache config is not loaded yet: call "
                                           r"set_cache_config_yaml\(\.\.\.\) before"):
        p.set_request_identity("admin", USERS["admin"]["password"])
    p.set_cache_config_yaml(fs_stack.cache_yaml())
    with pytest.raises(RuntimeError, match=re.escape("before install()")):
        p.install()
    p.set_request_identity("admin", USERS["admin"]["password"])
    with pytest.raises(RuntimeError, match=re.escape("call install() before mount_remote_dir")):
        p.mount_remote_dir(local_mount_dir_abs=str(tmp_path / "m"), export_name="demo-export")
    assert not (tmp_path / "m").exists()
    with p:
        p.mount_remote_dir(local_mount_dir_abs=str(tmp_path / "m"), export_name="demo-export")
        with pytest.raises(RuntimeError, match=re.escape(
                "call patcher.uninstall() before store.close()")):
            store.close()
    with pytest.raises(RuntimeError, match="without a matching install"):
        p.uninstall()
    p.unmount_remote_dir(str(tmp_path / "m"))


def test_config_yaml_unknown_keys_are_named(fs_stack, store):
    p = FluxonFsPatcher(store)
    with pytest.raises(ValueError, match=r"unknown key `fluxon_fs.master.instance_keyy`"):
        p.set_master_config_yaml("fluxon_fs:\n  master:\n    instance_keyy: x\n")
    with pytest.raises(ValueError, match=r"missing key `fluxon_fs.master.instance_key`"):
        p.set_master_config_yaml("fluxon_fs:\n  master: {}\n")
    p.set_master_config_yaml(fs_stack.master_yaml())
    bad = "fluxon_fs:\n  cache:\n    exports:\n      e:\n        remote_root_dir_abs: /x\n" \
          "        rpc_timeout_ms: 5\n"
    with pytest.raises(ValueError, match=r"unknown key `fluxon_fs.cache.exports.e.rpc_timeout_ms`"):
        p.set_cache_config_yaml(bad)
    with pytest.raises(ValueError, match="remote_root_dir_abs` must be an absolute path"):
        p.set_cache_config_yaml(
            "fluxon_fs:\n  cache:\n    exports:\n      e:\n        remote_root_dir_abs: rel\n")
    with pytest.raises(ValueError, match="invalid YAML"):
        p.set_cache_config_yaml("fluxon_fs: [")


def test_wrong_master_instance_key_is_rejected(fs_stack, store):
    p = FluxonFsPatcher(store)
    p.set_master_config_yaml("fluxon_fs:\n  master:\n    instance_key: someone_else\n")
    p.set_cache_config_yaml(fs_stack.cache_yaml())
    with pytest.raises(ValueError, match="instance_key mismatch"):
        p.set_request_identity("admin", USERS["admin"]["password"])


def test_bad_credentials_raise_permission_error(fs_stack, store):
    p = FluxonFsPatcher(store)
    p.set_master_config_yaml(fs_stack.master_yaml())
    p.set_cache_config_yaml(fs_stack.cache_yaml())
    with pytest.raises(PermissionError):
        p.set_request_identity("admin", "wrong-password")
    with pytest.raises(ValueError, match="request_identity.username must be non-empty"):
        p.set_request_identity("", "x")


def test_mount_rules_in_order(fs_stack, store, tmp_path):
    p = configured_patcher(fs_stack, store)
    with p:
        m = lambda d, e="demo-export": p.mount_remote_dir(local_mount_dir_abs=d, export_name=e)
        with pytest.raises(ValueError, match="^local_mount_dir_abs must be non-empty$"):
            m("")
        with pytest.raises(ValueError, match="^export_name must be non-empty$"):
            m(str(tmp_path / "a"), "")
        with pytest.raises(ValueError, match="^local_mount_dir_abs must be absolute"):
            m("relative/dir")
        with pytest.raises(ValueError, match="^unknown export_name: nope$"):
            m(str(tmp_path / "a"), "nope")
        with pytest.raises(ValueError, match="^local_mount_dir_abs cannot be '/'$"):
            m("/")
        with pytest.raises(ValueError, match="^local_mount_dir_abs cannot be '/'$"):
            m("//")
        (tmp_path / "file").write_text("x")
        with pytest.raises(ValueError, match="^local_mount_dir_abs is not a directory: "):
            m(str(tmp_path / "file"))
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("x")
        with pytest.raises(ValueError, match=re.escape(
                f"local_mount_dir_abs must be an empty directory: {tmp_path / 'full'} "
                "(refuse to shadow existing files)")):
            m(str(tmp_path / "full"))
        created = tmp_path / "new" / "deep"
        assert m(str(created) + "/") == str(created)
        assert created.is_dir()
        for clash in (created, created / "inner"):
            with pytest.raises(ValueError, match=re.escape(
                    f"mount overlap: new={clash} existing={created}")):
                m(str(clash), "second")
        assert not (created / "inner").exists()
        assert p.mounts() == {str(created): "demo-export"}
        p.unmount_remote_dir(str(created))
        assert p.mounts() == {}
        with pytest.raises(ValueError, match="not mounted"):
            p.unmount_remote_dir(str(created))


def test_unmount_and_uninstall_restore_everything(fs_stack, store, tmp_path):
    import builtins
    import io
    import pathlib
    import shutil
    originals = (builtins.open, io.open, os.stat, os.listdir, os.scandir, os.open,
                 pathlib.Path.touch, shutil.rmtree, os.remove, os.unlink)
    p = configured_patcher(fs_stack, store)
    with p:
        assert os.stat is not originals[2]
        d = tmp_path / "mnt"
        p.mount_remote_dir(local_mount_dir_abs=str(d), export_name="demo-export")
        open(d / "u.txt", "w").close()
        assert os.path.exists(d / "u.txt")
        assert not os.path.exists(str(tmp_path / "mnt" / "u.txt").replace("/mnt/", "/x/"))
        p.unmount_remote_dir(str(d))
        assert not os.path.exists(d / "u.txt")  # the local (empty) directory again
        p.mount_remote_dir(local_mount_dir_abs=str(d), export_name="demo-export")
        os.unlink(d / "u.txt")
    now = (builtins.open, io.open, os.stat, os.listdir, os.scandir, os.open,
           pathlib.Path.touch, shutil.rmtree, os.remove, os.unlink)
    assert all(a is b for a, b in zip(originals, now))
    assert os.listdir(d) == []
    p.unmount_remote_dir(str(d))


def test_install_is_reference_counted(fs_stack, store):
    p = configured_patcher(fs_stack, store)
    orig = os.stat
    p.install()
    p.install()
    p.uninstall()
    assert os.stat is not orig
    p.uninstall()
    assert os.stat is orig


def test_export_offline_is_unknown(fs_stack, store, tmp_path):
    """An export in the cache config that no online agent serves cannot be mounted."""
    from stack import cache_yaml

    p = FluxonFsPatcher(store)
    p.set_master_config_yaml(fs_stack.master_yaml())
    p.set_cache_config_yaml(cache_yaml({**fs_stack.exports, "ghost": tmp_path / "ghost"}))
    p.set_request_identity("admin", USERS["admin"]["password"])
    with p:
        with pytest.raises(ValueError, match="^unknown export_name: ghost .*no online agent"):
            p.mount_remote_dir(local_mount_dir_abs=str(tmp_path / "m"), export_name="ghost")
