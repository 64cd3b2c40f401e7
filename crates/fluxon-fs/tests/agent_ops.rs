//! File operations through a real agent on a temp dir, driven by the real client core:
//! every op, staged (atomic) writes, exclusive create, concurrent appends, large reads and
//! writes, inline small files, and symlink / `..` escape attempts.

mod support;

use std::io::Read;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{symlink, PermissionsExt};

use fluxon_fs_client::OpenFlags;
use support::{errno, Stack, EXPORT};

fn flags(linux: i32) -> OpenFlags {
    OpenFlags::from_linux(linux)
}

const RD: i32 = libc::O_RDONLY;
const WR_TRUNC: i32 = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
const EXCL: i32 = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
const APPEND: i32 = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND;

fn write_file(client: &fluxon_fs_client::Client, path: &str, data: &[u8]) {
    let f = client.open(EXPORT, path, flags(WR_TRUNC), 0o644).unwrap();
    f.pwrite(0, data).unwrap();
    f.close().unwrap();
}

fn read_file(client: &fluxon_fs_client::Client, path: &str) -> Vec<u8> {
    let f = client.open(EXPORT, path, flags(RD), 0).unwrap();
    let size = f.size().unwrap() as usize;
    let data = f.pread(0, size + 10).unwrap();
    f.close().unwrap();
    data
}

#[test]
fn path_operations_match_the_local_filesystem() {
    let stack = Stack::start();
    let c = stack.client("rw", "rw-pw");
    c.mkdir(EXPORT, "d", 0o755).unwrap();
    assert_eq!(errno(c.mkdir(EXPORT, "d", 0o755)), libc::EEXIST);
    write_file(&c, "d/a.txt", b"hello");
    assert_eq!(std::fs::read(stack.path("d/a.txt")).unwrap(), b"hello");

    let st = c.stat(EXPORT, "d/a.txt", true).unwrap();
    let local = std::fs::metadata(stack.path("d/a.txt")).unwrap();
    assert!(st.is_file());
    assert_eq!(st.size, 5);
    assert_eq!(st.ino, std::os::unix::fs::MetadataExt::ino(&local));
    assert_eq!(st.mode & 0o777, 0o644 & !current_umask());
    assert!(c.stat(EXPORT, "", true).unwrap().is_dir());
    assert_eq!(errno(c.stat(EXPORT, "missing", true)), libc::ENOENT);
    assert_eq!(errno(c.stat(EXPORT, "d/a.txt/x", true)), libc::ENOTDIR);

    let names: Vec<String> = c
        .listdir(EXPORT, "d")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["a.txt"]);

    c.rename(EXPORT, "d/a.txt", "d/b.txt", false).unwrap();
    assert!(!stack.path("d/a.txt").exists());
    write_file(&c, "d/c.txt", b"c");
    assert_eq!(
        errno(c.rename(EXPORT, "d/c.txt", "d/b.txt", true)),
        libc::EEXIST
    );
    c.rename(EXPORT, "d/c.txt", "d/b.txt", false).unwrap();
    assert_eq!(std::fs::read(stack.path("d/b.txt")).unwrap(), b"c");

    c.chmod(EXPORT, "d/b.txt", 0o600).unwrap();
    assert_eq!(
        std::fs::metadata(stack.path("d/b.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    c.utime(EXPORT, "d/b.txt", 1_000_000_000, 2_000_000_123)
        .unwrap();
    let st = c.stat(EXPORT, "d/b.txt", true).unwrap();
    assert_eq!((st.atime_ns, st.mtime_ns), (1_000_000_000, 2_000_000_123));
    c.truncate(EXPORT, "d/b.txt", 10).unwrap();
    assert_eq!(
        std::fs::read(stack.path("d/b.txt")).unwrap(),
        b"c\0\0\0\0\0\0\0\0\0"
    );

    symlink("b.txt", stack.path("d/link")).unwrap();
    assert_eq!(c.readlink(EXPORT, "d/link").unwrap(), "b.txt");
    assert!(c.stat(EXPORT, "d/link", false).unwrap().is_symlink());
    assert!(c.stat(EXPORT, "d/link", true).unwrap().is_file());
    assert!(c.access(EXPORT, "d/b.txt", libc::R_OK as u32).unwrap());
    assert!(!c.access(EXPORT, "d/nope", 0).unwrap());

    assert_eq!(errno(c.rmdir(EXPORT, "d")), libc::ENOTEMPTY);
    assert_eq!(errno(c.unlink(EXPORT, "d")), libc::EISDIR);
    c.unlink(EXPORT, "d/link").unwrap();
    c.unlink(EXPORT, "d/b.txt").unwrap();
    c.rmdir(EXPORT, "d").unwrap();
    assert!(!stack.path("d").exists());
    assert_eq!(errno(c.open(EXPORT, "missing", flags(RD), 0)), libc::ENOENT);
    c.mkdir(EXPORT, "dir", 0o755).unwrap();
    assert_eq!(errno(c.open(EXPORT, "dir", flags(RD), 0)), libc::EISDIR);
    assert_eq!(
        errno(c.open(EXPORT, "dir", flags(WR_TRUNC), 0o644)),
        libc::EISDIR
    );
}

fn current_umask() -> u32 {
    // SAFETY: umask(2) swaps the process mask; set it straight back.
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old as u32
    }
}

#[test]
fn truncating_writes_appear_atomically_on_close() {
    let stack = Stack::start();
    let writer = stack.client("rw", "rw-pw");
    let reader = stack.client("ro", "ro-pw");
    write_file(&writer, "f.txt", b"old content");

    let f = writer
        .open(EXPORT, "f.txt", flags(WR_TRUNC), 0o644)
        .unwrap();
    f.pwrite(0, b"new").unwrap();
    f.flush().unwrap();
    // Not closed yet: readers still see the previous version, whole.
    assert_eq!(read_file(&reader, "f.txt"), b"old content");
    assert_eq!(std::fs::read(stack.path("f.txt")).unwrap(), b"old content");
    // Staged files never show up in listings.
    let names: Vec<String> = reader
        .listdir(EXPORT, "")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["f.txt"]);
    f.close().unwrap();
    assert_eq!(read_file(&reader, "f.txt"), b"new");

    // A new file does not exist until its writer closes it.
    let g = writer
        .open(EXPORT, "g.txt", flags(WR_TRUNC), 0o640)
        .unwrap();
    g.pwrite(0, b"g").unwrap();
    assert_eq!(errno(reader.stat(EXPORT, "g.txt", true)), libc::ENOENT);
    g.close().unwrap();
    assert_eq!(read_file(&reader, "g.txt"), b"g");

    // Replacing keeps the permission bits of the replaced file.
    std::fs::set_permissions(stack.path("g.txt"), std::fs::Permissions::from_mode(0o604)).unwrap();
    write_file(&writer, "g.txt", b"again");
    assert_eq!(
        std::fs::metadata(stack.path("g.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o604
    );
}

#[test]
fn exclusive_create_admits_one_writer() {
    let stack = Stack::start();
    let a = stack.client("rw", "rw-pw");
    let b = stack.client("rw", "rw-pw");
    let first = a.open(EXPORT, "x.txt", flags(EXCL), 0o644).unwrap();
    // Pending on the agent: a second exclusive create fails at open, as locally.
    assert_eq!(
        errno(b.open(EXPORT, "x.txt", flags(EXCL), 0o644)),
        libc::EEXIST
    );
    first.pwrite(0, b"mine").unwrap();
    first.close().unwrap();
    assert_eq!(
        errno(b.open(EXPORT, "x.txt", flags(EXCL), 0o644)),
        libc::EEXIST
    );
    assert_eq!(std::fs::read(stack.path("x.txt")).unwrap(), b"mine");
    // A file created behind the staged writer's back wins; the close reports EEXIST.
    let late = a.open(EXPORT, "y.txt", flags(EXCL), 0o644).unwrap();
    std::fs::write(stack.path("y.txt"), b"local").unwrap();
    late.pwrite(0, b"remote").unwrap();
    assert_eq!(errno(late.close()), libc::EEXIST);
    assert_eq!(std::fs::read(stack.path("y.txt")).unwrap(), b"local");
}

#[test]
fn appends_from_two_writers_land_at_the_true_end() {
    let stack = Stack::start();
    let a = stack.client("rw", "rw-pw");
    let b = stack.client("rw", "rw-pw");
    let fa = a.open(EXPORT, "log", flags(APPEND), 0o644).unwrap();
    let fb = b.open(EXPORT, "log", flags(APPEND), 0o644).unwrap();
    let threads: Vec<_> = [(fa, b'a'), (fb, b'b')]
        .into_iter()
        .map(|(f, byte)| {
            std::thread::spawn(move || {
                for _ in 0..200 {
                    f.append(&[byte; 100]).unwrap();
                }
                f.close().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let data = std::fs::read(stack.path("log")).unwrap();
    assert_eq!(data.len(), 2 * 200 * 100);
    for record in data.chunks(100) {
        assert!(record.iter().all(|&x| x == record[0]), "interleaved append");
    }
    assert_eq!(data.iter().filter(|&&x| x == b'a').count(), 20_000);
}

#[test]
fn large_files_stream_in_both_directions() {
    let stack = Stack::start();
    let c = stack.client("rw", "rw-pw");
    let data: Vec<u8> = (0..(20 * 1024 * 1024 + 123))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let f = c.open(EXPORT, "big.bin", flags(WR_TRUNC), 0o644).unwrap();
    for (i, piece) in data.chunks(1 << 20).enumerate() {
        f.pwrite((i << 20) as u64, piece).unwrap();
    }
    f.close().unwrap();
    assert!(std::fs::read(stack.path("big.bin")).unwrap() == data);

    let f = c.open(EXPORT, "big.bin", flags(RD), 0).unwrap();
    assert_eq!(f.inline_fd().unwrap(), None);
    assert!(f.pread(0, data.len() + 1).unwrap() == data, "whole read");
    // Sequential small reads (readahead) and a random one.
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        let chunk = f.pread(pos as u64, 65_536).unwrap();
        if chunk.is_empty() {
            break;
        }
        pos += chunk.len();
        out.extend(chunk);
    }
    assert!(out == data, "sequential read");
    assert_eq!(f.pread(7_000_000, 10).unwrap(), data[7_000_000..7_000_010]);
    assert!(f.pread(data.len() as u64 + 5, 10).unwrap().is_empty());
    f.close().unwrap();

    // In-place writes (r+) and truncate on a handle.
    let f = c.open(EXPORT, "big.bin", flags(libc::O_RDWR), 0).unwrap();
    f.pwrite(5, b"XYZ").unwrap();
    assert_eq!(f.pread(4, 5).unwrap(), [data[4], b'X', b'Y', b'Z', data[8]]);
    f.truncate(100).unwrap();
    assert_eq!(f.size().unwrap(), 100);
    f.close().unwrap();
    assert_eq!(std::fs::metadata(stack.path("big.bin")).unwrap().len(), 100);
}

#[test]
fn small_files_come_back_inline_as_a_memfd() {
    let stack = Stack::start();
    std::fs::write(stack.path("small.txt"), b"tiny content").unwrap();
    let c = stack.client("ro", "ro-pw");
    // A mode without O_CREAT is ignored, as by open(2).
    let f = c.open(EXPORT, "small.txt", flags(RD), 0o666).unwrap();
    let fd = f.inline_fd().unwrap().expect("inline fd");
    // SAFETY: inline_fd hands us ownership of a fresh fd.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut content = String::new();
    file.read_to_string(&mut content).unwrap();
    assert_eq!(content, "tiny content");
    assert_eq!(f.pread(5, 100).unwrap(), b"content");
    assert_eq!(f.size().unwrap(), 12);
    f.close().unwrap();
    assert!(f.closed());
    assert!(f.pread(0, 1).is_err());
}

#[test]
fn symlinks_and_dotdot_cannot_leave_the_export_root() {
    let stack = Stack::start();
    let outside = stack.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    std::fs::create_dir_all(stack.path("sub")).unwrap();
    std::fs::write(stack.path("sub/inner.txt"), b"inner").unwrap();
    symlink(&outside, stack.path("abs_out")).unwrap();
    symlink("../outside", stack.path("rel_out")).unwrap();
    symlink("../../outside/secret", stack.path("sub/deep_out")).unwrap();
    symlink("sub", stack.path("inside")).unwrap();
    symlink("/etc/passwd", stack.path("passwd")).unwrap();
    let c = stack.client("admin", "admin-pw");

    for path in ["abs_out/secret", "rel_out/secret", "sub/deep_out", "passwd"] {
        assert_eq!(
            errno(c.stat(EXPORT, path, true)),
            libc::EACCES,
            "stat {path}"
        );
        assert_eq!(
            errno(c.open(EXPORT, path, flags(RD), 0)),
            libc::EACCES,
            "open {path}"
        );
    }
    assert_eq!(errno(c.listdir(EXPORT, "rel_out")), libc::EACCES);
    assert_eq!(
        errno(c.open(EXPORT, "rel_out/new", flags(WR_TRUNC), 0o644)),
        libc::EACCES
    );
    assert_eq!(
        errno(c.open(EXPORT, "rel_out/new", flags(APPEND), 0o644)),
        libc::EACCES
    );
    assert_eq!(
        errno(c.mkdir(EXPORT, "rel_out/newdir", 0o755)),
        libc::EACCES
    );
    assert_eq!(errno(c.chmod(EXPORT, "passwd", 0o777)), libc::EACCES);
    assert_eq!(errno(c.truncate(EXPORT, "rel_out/secret", 0)), libc::EACCES);
    assert_eq!(
        errno(c.rename(EXPORT, "rel_out/secret", "stolen", false)),
        libc::EACCES
    );
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
    assert!(!outside.join("new").exists() && !outside.join("newdir").exists());

    // The links themselves are visible; links that stay inside work.
    assert!(c.stat(EXPORT, "rel_out", false).unwrap().is_symlink());
    assert_eq!(read_file(&c, "inside/inner.txt"), b"inner");
    // Removing a link removes the link, never its target.
    c.unlink(EXPORT, "abs_out").unwrap();
    assert!(outside.join("secret").exists());

    // `..` is refused by the client and, independently, by the agent.
    assert_eq!(
        errno(c.stat(EXPORT, "../outside/secret", true)),
        libc::EACCES
    );
    assert_eq!(errno(c.stat(EXPORT, "/etc/passwd", true)), libc::EACCES);
    raw::assert_agent_refuses_dotdot(&stack);
}

mod raw {
    //! Talks the wire protocol directly, bypassing the client's own path checks.
    use bytes::Bytes;
    use fluxon_fs_proto::http::call_json;
    use fluxon_fs_proto::master_api::{LoginRequest, TokenReply};
    use fluxon_fs_proto::{Frame, Request, Response, PROTOCOL_VERSION};
    use tokio::io::AsyncWriteExt;

    use super::support::{Stack, EXPORT};

    pub fn assert_agent_refuses_dotdot(stack: &Stack) {
        let master = stack.master_addr();
        let agent = stack.agent.addr;
        stack.runtime.block_on(async move {
            let login = LoginRequest {
                username: "admin".into(),
                password: "admin-pw".into(),
            };
            let token: TokenReply = call_json(&master, hyper::Method::POST, "/api/v1/login", None, Some(&login), std::time::Duration::from_secs(5))
                .await
                .unwrap();
            let mut stream = tokio::net::TcpStream::connect(agent).await.unwrap();
            let mut call = async |id: u64, req: Request| {
                let frame = Frame::encode(id, &req, Bytes::new()).unwrap();
                stream.write_all(&frame.to_bytes().unwrap()).await.unwrap();
                Frame::read(&mut stream).await.unwrap().decode::<Response>().unwrap()
            };
            assert_eq!(call(1, Request::Hello { protocol_version: PROTOCOL_VERSION }).await, Response::Ok);
            // Before Auth: refused.
            let stat = |path: &str| Request::Stat {
                export: EXPORT.into(),
                path: path.into(),
                follow: true,
            };
            assert!(matches!(call(2, stat("")).await, Response::Err(e) if e.errno == libc::EACCES));
            assert_eq!(call(3, Request::Auth { token: token.token.clone() }).await, Response::Ok);
            assert!(matches!(call(4, stat("")).await, Response::Stat(_)));
            for (id, path) in [(5, "../outside"), (6, "sub/../../outside"), (7, "/etc"), (8, "sub//x")] {
                match call(id, stat(path)).await {
                    Response::Err(e) => assert_eq!(e.errno, libc::EACCES, "{path}: {}", e.message),
                    other => panic!("{path}: agent answered {other:?}"),
                }
            }
            // A forged token is refused.
            // Change one character inside the signature (never the last one, whose low bits
            // base64 decoders may ignore) to a different character.
            let mut chars: Vec<char> = token.token.chars().collect();
            let at = chars.len() - 10;
            chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
            let forged: String = chars.into_iter().collect();
            assert_ne!(forged, token.token);
            assert!(matches!(call(9, Request::Auth { token: forged }).await, Response::Err(e) if e.errno == libc::EACCES));
        });
    }
}
