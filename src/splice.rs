//! Socket-to-socket forwarding through a pipe with `splice(2)`: the kernel
//! moves the bytes (on loopback and most NICs by passing page references),
//! so large WebSocket payloads never enter user space.
//!
//! A pipe is held only while bytes are in it; empty pipes go back to a small
//! pool per thread, so idle sessions hold none and a busy one reuses a warm
//! pipe instead of paying two system calls to make it.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes a pipe holds: fewer, larger splices per large frame.
const PIPE_SIZE: libc::c_int = 256 * 1024;

/// At most this many empty pipes are kept per thread; more are closed.
/// Each charges its pages to the user's pipe quota even while empty.
const MAX_IDLE: usize = 8;

/// After the kernel refused a pipe its size, none is made for this long:
/// the relay copies instead.
const REFUSED_FOR: Duration = Duration::from_secs(10);

thread_local! {
    static IDLE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    static REFUSED_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// A non-blocking pipe, both ends owned.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1; 2];
        // SAFETY: `fds` is an array of two ints for pipe2 to fill; nothing else is touched.
        let result = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on a pipe we own. The kernel refuses it once
        // the user's pipe quota (pipe-user-pages-soft) is used up, and then
        // has given the pipe only two pages: slower than a copy, so it is
        // closed again and the caller copies.
        let sized = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        if sized < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pipe { read, write })
    }

    /// Moves up to `len` bytes from `socket` into the pipe, which must be
    /// empty. `Ok(0)` is the end of the socket's stream; `WouldBlock` (which
    /// also clears tokio's read readiness) means nothing is there yet.
    pub fn fill_from(&self, socket: &TcpStream, len: usize) -> io::Result<usize> {
        socket.try_io(Interest::READABLE, || {
            splice(socket.as_raw_fd(), self.write.as_raw_fd(), len)
        })
    }

    /// Moves up to `len` bytes from the pipe into `socket`; `WouldBlock`
    /// (which clears tokio's write readiness) means the socket is full.
    pub fn drain_to(&self, socket: &TcpStream, len: usize) -> io::Result<usize> {
        socket.try_io(Interest::WRITABLE, || {
            splice(self.read.as_raw_fd(), socket.as_raw_fd(), len)
        })
    }
}

/// An empty pipe from this thread's pool, or a new one; `None` when none
/// can be made (out of descriptors: the caller copies through user space).
pub fn take() -> Option<Pipe> {
    let reused = IDLE.try_with(|idle| idle.borrow_mut().pop()).ok().flatten();
    if reused.is_some() {
        return reused;
    }
    let refused = REFUSED_AT
        .try_with(|at| at.get().is_some_and(|at| at.elapsed() < REFUSED_FOR))
        .unwrap_or(false);
    if refused {
        return None;
    }
    match Pipe::new() {
        Ok(pipe) => Some(pipe),
        Err(error) => {
            tracing::debug!(%error, "no pipe for splice; copying instead");
            let _ = REFUSED_AT.try_with(|at| at.set(Some(Instant::now())));
            None
        }
    }
}

/// Returns a pipe the caller has emptied. One that still holds bytes must
/// be dropped instead: they would reach the next user.
pub fn give_back(pipe: Pipe) {
    // During thread teardown the pool is gone and the pipe is simply closed.
    let _ = IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        if idle.len() < MAX_IDLE {
            idle.push(pipe);
        }
    });
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (the
    // caller borrows their owners); null offsets mean "the file position",
    // as pipes and sockets require.
    let moved = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(moved).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (connected.expect("connect"), accepted.expect("accept").0)
    }

    #[tokio::test]
    async fn bytes_cross_from_socket_to_socket_unchanged() {
        let (mut writer, from) = socket_pair().await;
        let (to, mut reader) = socket_pair().await;
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let feed = tokio::spawn({
            let sent = sent.clone();
            async move {
                writer.write_all(&sent).await.expect("write");
                writer.shutdown().await.expect("shutdown");
            }
        });
        let received = tokio::spawn(async move {
            let mut received = Vec::new();
            reader.read_to_end(&mut received).await.expect("read");
            received
        });
        let pipe = take().expect("a pipe");
        loop {
            from.readable().await.expect("readable");
            let mut held = match pipe.fill_from(&from, 1 << 20) {
                Ok(0) => break,
                Ok(moved) => moved,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("splice in: {e}"),
            };
            while held > 0 {
                to.writable().await.expect("writable");
                match pipe.drain_to(&to, held) {
                    Ok(moved) => held -= moved,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("splice out: {e}"),
                }
            }
        }
        give_back(pipe);
        drop(to);
        feed.await.expect("feeder");
        assert_eq!(received.await.expect("reader"), sent);
        assert!(take().is_some(), "the emptied pipe is reused");
    }
}
