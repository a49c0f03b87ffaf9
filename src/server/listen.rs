//! Binding listeners: `SO_REUSEPORT` for overlapping restarts, the handover
//! to a successor on the same port, and listener identity across reloads.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

use crate::snapshot::{Listener, Snapshot};

/// The listen backlog: connections the kernel completes while every
/// connection slot is taken, or between two turns of the accept loop.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds `addr` the way every wsgate listener is bound: with `SO_REUSEPORT`,
/// so a new wsgate can bind the same port while the old one drains (the
/// kernel spreads new connections over both until the old one closes its
/// socket), and `SO_REUSEADDR`, so a restart does not wait for `TIME_WAIT`.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    // The group exists once a socket listens.
    clear_steering(&socket);
    TcpListener::from_std(socket.into())
}

/// After steering, how long a stopping listener keeps accepting before it
/// closes: long enough for connections whose TCP handshake was already under
/// way on it to land in its queue and be served.
pub(super) const HANDOVER: Duration = Duration::from_millis(250);

/// Asks the kernel to send new connections for `listener`'s port to the
/// second socket of its `SO_REUSEPORT` group: during a rolling restart, the
/// instance that started after this one. Without it the kernel keeps
/// putting connections in this socket's queue until it closes, and closing
/// resets those that arrive in between. A group of one falls back to the
/// usual spreading (the index is out of range), so this never loses a
/// connection. Returns whether the kernel took the program.
pub(super) fn steer_to_successor(listener: &TcpListener) -> bool {
    // cBPF `ret #1`: pick the socket at index 1 of the group.
    let program = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 1,
    }];
    let fprog = libc::sock_fprog {
        len: 1,
        filter: program.as_ptr().cast_mut(),
    };
    let size = std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t;
    // SAFETY: `fprog` points at `program`, both live across the call; the
    // kernel copies the program and reads exactly `size` bytes of `fprog`.
    let result = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::from_ref(&fprog).cast(),
            size,
        )
    };
    result == 0
}

/// Removes a steering program a stopped predecessor left on the port, so
/// the group spreads connections again once this instance is the newest.
fn clear_steering(socket: &Socket) {
    // SAFETY: the option takes no value; the kernel reads nothing from the pointer.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DETACH_REUSEPORT_BPF,
            std::ptr::null(),
            0,
        )
    };
}

/// A public listener's identity across reloads: the address the config
/// gives, and which of the listeners with that address it is (a config may
/// ask for port 0 more than once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    pub bind: SocketAddr,
    nth: usize,
}

impl ListenerKey {
    /// The keys of listeners bound to `binds`, in that order.
    pub fn all(binds: impl IntoIterator<Item = SocketAddr>) -> Vec<ListenerKey> {
        let mut keys: Vec<ListenerKey> = Vec::new();
        for bind in binds {
            let nth = keys.iter().filter(|k| k.bind == bind).count();
            keys.push(ListenerKey { bind, nth });
        }
        keys
    }

    pub(super) fn settings(self, snapshot: &Snapshot) -> Option<&Listener> {
        snapshot
            .listeners
            .iter()
            .filter(|l| l.bind == self.bind)
            .nth(self.nth)
    }
}
