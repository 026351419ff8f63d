//! Opening a file a stage reads. Every input path comes from a command line or a manifest, so
//! it may name something that is not a regular file: a named pipe (FIFO) that no process
//! writes blocks `open` forever, and a device such as `/dev/zero` never reaches its end, so a
//! stage given either would hang (or fill the memory) instead of failing. [`open_input`] opens
//! without waiting for a writer and refuses anything but a regular file; [`read_input`] reads
//! one whole. Text, read once from start to end, may also come from a pipe
//! ([`open_stream_input`]), whose writer is waited for as any reader of a pipe waits. The
//! refusal is an [`io::Error`] of kind `InvalidInput` whose text says what the path is (`is a
//! named pipe (FIFO), not a regular file`), so a caller that names the path in its error keeps
//! doing so.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// What a file type is called in a refusal: "a named pipe (FIFO)", "a folder", ….
pub fn file_kind(meta: &Metadata) -> &'static str {
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        return "a symbolic link";
    }
    if file_type.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            return "a device";
        }
    }
    if file_type.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// The refusal of an input that is `meta`'s kind of file, not a regular one.
fn not_regular(meta: &Metadata) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("is {}, not a regular file", file_kind(meta)),
    )
}

/// Opens `path` (symbolic links followed) for reading if it is a regular file; anything else
/// (a FIFO, a device, a socket, a folder) is refused without blocking. On Unix the file is
/// opened with `O_NONBLOCK`, so that a FIFO without a writer is opened at once and then refused
/// by the type of the open file, not of a path another process could swap in between; the flag
/// is cleared again before the file is returned, so its reads block as usual (a FUSE or
/// network file system may otherwise answer a read with "try again").
pub fn open_input(path: &Path) -> io::Result<File> {
    let (file, meta) = open_without_waiting(path)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    refuse_kernel_files(&file)?;
    blocking(file)
}

/// Refuses a file of the kernel's /proc or /sys: they call themselves regular (and empty), but
/// a read may block for ever (/proc/kmsg) or never end, and reading some consumes what they
/// hold.
#[cfg(target_os = "linux")]
fn refuse_kernel_files(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    const SYSFS_MAGIC: i64 = 0x6265_6572;
    // SAFETY: fstatfs writes only into the zeroed struct it is given, for a valid open fd.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut stat) } != 0 {
        return Ok(()); // nothing known against it: read as usual
    }
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on some targets, i32/u32 on others
    match stat.f_type as i64 {
        PROC_SUPER_MAGIC | SYSFS_MAGIC => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a file of the kernel's /proc or /sys, not a regular file (its reads may block \
             or never end)",
        )),
        _ => Ok(()),
    }
}

#[cfg(not(target_os = "linux"))]
fn refuse_kernel_files(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Opens `path` (symbolic links followed) for reading once from start to end, as text is read:
/// a regular file, or a pipe, so that `--text <(zcat corpus.gz)` works. A named pipe (FIFO)
/// that no process has opened to write yet is waited on, as `cat` and every reader of a pipe
/// wait, until a writer has written something or has come and gone (said once in the log after
/// a second, naming the path): read as empty at once, its text was refused as holding none and
/// the writer started next blocked for ever. A pipe whose writer has gone already (`<(cmd)`
/// after `cmd` ended) is read to its end at once, never waited on. A device, socket or folder
/// is refused as by [`open_input`]. Not for tables, which are read whole as regular files.
pub fn open_stream_input(path: &Path) -> io::Result<File> {
    let (file, meta) = open_without_waiting(path)?;
    if !(meta.is_file() || is_fifo(&meta)) {
        return Err(not_regular(&meta));
    }
    if meta.is_file() {
        refuse_kernel_files(&file)?;
    } else {
        wait_for_a_writer(&file, path)?;
    }
    // Blocking reads from here on: a writer's data is waited for, and with no writer left a
    // read returns 0, the end.
    blocking(file)
}

/// Waits until the pipe `file` (opened without waiting, `O_NONBLOCK`) has something to read or
/// its end: data, or a writer that has closed it. Linux reports no end to a FIFO's reader that
/// opened it without a writer until a writer has come (a pipe's end is reported at once), so
/// this waits for a FIFO's first writer; a system that reports the end at once reads it as
/// empty, as before.
#[cfg(unix)]
fn wait_for_a_writer(file: &File, path: &Path) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let mut said = false;
    loop {
        let mut poll = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // A second first, then for as long as it takes.
        let timeout = if said { -1 } else { 1000 };
        // SAFETY: one pollfd for a descriptor `file` owns, for the length given.
        match unsafe { libc::poll(&mut poll, 1, timeout) } {
            0 => {
                tracing::info!(
                    "{}: a pipe nothing has been written to yet; waiting for its writer",
                    path.display()
                );
                said = true;
            }
            n if n > 0 => return Ok(()),
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

#[cfg(not(unix))]
fn wait_for_a_writer(_file: &File, _path: &Path) -> io::Result<()> {
    Ok(())
}

/// `path` opened for reading without waiting for a FIFO's writer, with its metadata. A path
/// that cannot be opened because of what it is (a socket: "no such device or address") is
/// refused as not a regular file, naming what it is, rather than with the system's words.
fn open_without_waiting(path: &Path) -> io::Result<(File, Metadata)> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    #[cfg(not(unix))]
    {
        // No FIFOs to wait on; folders and devices are refused by their metadata before opening.
        let meta = std::fs::metadata(path)?;
        if !meta.is_file() {
            return Err(not_regular(&meta));
        }
    }
    match options.open(path) {
        Ok(file) => {
            let meta = file.metadata()?;
            Ok((file, meta))
        }
        Err(error) => match std::fs::metadata(path) {
            Ok(meta) if !meta.is_file() && !is_fifo(&meta) => Err(not_regular(&meta)),
            _ => Err(error),
        },
    }
}

fn is_fifo(meta: &Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        meta.file_type().is_fifo()
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

/// `file` with `O_NONBLOCK` cleared (it was set only so that opening could not wait).
fn blocking(file: File) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor `file` owns, reading and setting its status flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// The whole of the regular file at `path` ([`open_input`]).
pub fn read_input(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open_input(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Refuses a path that exists and is not a regular file (symbolic links followed), without
/// opening it; a missing path passes (reading it fails on its own). For files another library
/// opens by path (ONNX Runtime's graphs).
pub fn refuse_special(path: &Path) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() && !meta.is_dir() => Err(not_regular(&meta)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_regular_file_is_read_and_a_folder_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "text").unwrap();
        #[cfg(unix)]
        {
            // Opened without waiting, but handed back with blocking reads.
            use std::os::unix::io::AsRawFd;
            for file in [
                open_input(&path).unwrap(),
                open_stream_input(&path).unwrap(),
            ] {
                // SAFETY: reading the status flags of an open descriptor.
                let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
                assert_eq!(flags & libc::O_NONBLOCK, 0);
            }
        }
        assert_eq!(read_input(&path).unwrap(), b"text");
        let error = read_input(dir.path()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(error.to_string(), "is a folder, not a regular file");
        let missing = read_input(&dir.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_of_proc_or_sys_is_refused_though_it_calls_itself_regular() {
        // /proc/self/status is "regular" and empty by its size, as /proc/kmsg is, whose read
        // blocks for ever: refused by the file system it lies on, before any read.
        for path in [
            "/proc/self/status",
            "/sys/kernel/mm/transparent_hugepage/enabled",
        ] {
            let path = Path::new(path);
            if !path.is_file() {
                continue;
            }
            let error = read_input(path).unwrap_err();
            assert_eq!(
                error.kind(),
                io::ErrorKind::InvalidInput,
                "{}",
                path.display()
            );
            assert!(error.to_string().contains("/proc or /sys"), "{error}");
            assert!(open_stream_input(path).is_err());
        }
    }

    #[cfg(unix)]
    fn make_fifo(path: &Path) {
        let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and a mode; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    }

    #[cfg(unix)]
    #[test]
    fn a_stream_is_a_regular_file_or_a_pipe_read_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "text").unwrap();
        let mut text = String::new();
        open_stream_input(&path)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "text");

        let fifo = dir.path().join("fifo");
        make_fifo(&fifo);
        // A pipe with a writer (as `<(command)` gives): its data, then its end once the writer
        // closes. Opened read-write, the writer's end does not wait for a reader.
        let mut writer = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        std::io::Write::write_all(&mut writer, b"piped text").unwrap();
        let mut reader = open_stream_input(&fifo).unwrap();
        drop(writer);
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        assert_eq!(text, "piped text");

        // A pipe whose writer has gone before it was opened (`<(printf text)` once printf has
        // ended): its data, then its end, at once; empty if nothing was written. On a thread,
        // so that waiting for a writer fails the test rather than hangs it.
        for written in [&b"the last words"[..], b""] {
            let (reader, mut writer) = std::io::pipe().unwrap();
            std::io::Write::write_all(&mut writer, written).unwrap();
            drop(writer);
            let path = fd_path(&reader);
            let (send, receive) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let read = open_stream_input(&path).and_then(|mut f| f.read_to_end(&mut bytes));
                send.send(read.map(|_| bytes))
            });
            let bytes = receive
                .recv_timeout(Duration::from_secs(10))
                .expect("reading a pipe whose writer had gone waited")
                .unwrap();
            assert_eq!(bytes, written);
            drop(reader);
        }

        let error = open_stream_input(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(error.to_string(), "is a device, not a regular file");
        // A socket cannot even be opened: refused as what it is, not "no such device".
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for error in [
            open_stream_input(&socket).unwrap_err(),
            read_input(&socket).unwrap_err(),
        ] {
            assert_eq!(error.to_string(), "is a socket, not a regular file");
        }
        let error = open_stream_input(dir.path()).unwrap_err();
        assert_eq!(error.to_string(), "is a folder, not a regular file");
    }

    /// The path through which this process opens `file` again (`/dev/fd/N`, as bash's `<(…)`
    /// gives).
    #[cfg(unix)]
    fn fd_path(file: &impl std::os::unix::io::AsRawFd) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/dev/fd/{}", file.as_raw_fd()))
    }

    /// A named pipe read as text waits for its writer, as `cat` does (it was read as empty at
    /// once, refused as holding no text, and the writer started next blocked for ever); a
    /// writer that closes it without writing gives its end.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_fifo_read_as_text_waits_for_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        make_fifo(&fifo);
        for written in [&b"text written late"[..], b""] {
            let (send, receive) = std::sync::mpsc::channel();
            let reading = fifo.clone();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let read = open_stream_input(&reading).and_then(|mut f| f.read_to_end(&mut bytes));
                send.send(read.map(|_| bytes))
            });
            assert!(
                matches!(
                    receive.recv_timeout(Duration::from_millis(300)),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                ),
                "a FIFO without a writer was read without waiting for one"
            );
            // The writer comes (opened without waiting, so that a reader that is gone fails
            // the test rather than hangs it: "no such device or address").
            use std::os::unix::fs::OpenOptionsExt;
            let mut writer = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .expect("the reader holds the FIFO open");
            std::io::Write::write_all(&mut writer, written).unwrap();
            drop(writer);
            let bytes = receive
                .recv_timeout(Duration::from_secs(10))
                .expect("the writer's end was not read")
                .unwrap();
            assert_eq!(bytes, written);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_without_a_writer_and_a_device_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        make_fifo(&fifo);
        // Run on a thread, so that a regression (a blocking open) fails the test, not hangs it.
        let (send, receive) = std::sync::mpsc::channel();
        let started = Instant::now();
        std::thread::spawn(move || send.send(read_input(&fifo).map(drop)));
        let error = receive
            .recv_timeout(Duration::from_secs(10))
            .expect("reading a FIFO without a writer blocked")
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            error.to_string(),
            "is a named pipe (FIFO), not a regular file"
        );
        let device = read_input(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(device.to_string(), "is a device, not a regular file");
        assert_eq!(
            refuse_special(Path::new("/dev/zero"))
                .unwrap_err()
                .to_string(),
            "is a device, not a regular file"
        );
        assert!(refuse_special(dir.path()).is_ok());
        assert!(refuse_special(&dir.path().join("missing")).is_ok());
    }
}
