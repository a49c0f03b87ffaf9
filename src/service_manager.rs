//! Readiness for a service manager (systemd's `Type=notify` protocol): one
//! datagram per state change to the socket named by `NOTIFY_SOCKET`.
//!
//! `READY=1` goes out once every listener is bound, so `systemctl start` and
//! units ordered after wsgate wait for a gateway that accepts connections.
//! A reload is bracketed by `RELOADING=1` and `READY=1`, so the manager shows
//! the unit as reloading until the new config serves (or was refused), and
//! with `Type=notify-reload` `systemctl reload` waits for it; a drain
//! announces `STOPPING=1`. Without `NOTIFY_SOCKET` every call does nothing.
//!
//! With `WatchdogSec=` set, `WATCHDOG=1` goes out at half that interval from
//! a task on the runtime: if the runtime stops running tasks, the pings stop
//! and systemd restarts the process.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

/// Where state changes are sent, if a service manager asked for them.
pub struct ServiceManager {
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// How often to send `WATCHDOG=1`, when the manager watches this process.
    watchdog: Option<Duration>,
}

impl ServiceManager {
    /// Reads `NOTIFY_SOCKET`: a filesystem path, or `@name` for a socket in
    /// the abstract namespace, which some managers hand out.
    pub fn from_env() -> ServiceManager {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return ServiceManager {
                socket: None,
                watchdog: None,
            };
        };
        let connect = || -> io::Result<(UnixDatagram, SocketAddr)> {
            let bytes = name.as_encoded_bytes();
            let addr = match bytes.strip_prefix(b"@") {
                Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
                None => SocketAddr::from_pathname(&name)?,
            };
            Ok((UnixDatagram::unbound()?, addr))
        };
        match connect() {
            Ok(socket) => ServiceManager {
                socket: Some(socket),
                watchdog: watchdog_interval(),
            },
            Err(error) => {
                tracing::warn!(socket = ?name, %error, "NOTIFY_SOCKET is unusable; readiness is not reported");
                ServiceManager {
                    socket: None,
                    watchdog: None,
                }
            }
        }
    }

    /// Every listener is bound and serving.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A reload begins. systemd wants the `CLOCK_MONOTONIC` time with it so
    /// it can tell this reload from an earlier one.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
            monotonic_usec()
        ));
    }

    /// The drain has begun; the process exits when it ends.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining");
    }

    /// Sends `WATCHDOG=1` for as long as the runtime runs this task; returns
    /// at once when no watchdog is set.
    pub async fn feed_watchdog(self: Arc<Self>) {
        let Some(every) = self.watchdog else {
            return;
        };
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            self.send("WATCHDOG=1");
        }
    }

    fn send(&self, state: &str) {
        let Some((socket, addr)) = &self.socket else {
            return;
        };
        // Readiness is advice to the manager: failing to send it must not
        // stop the gateway, but the operator should know why systemd waits.
        if let Err(error) = socket.send_to_addr(state.as_bytes(), addr) {
            tracing::warn!(%error, "cannot notify the service manager");
        }
    }
}

/// Half the interval systemd set in `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// advises; `None` without one, or when `WATCHDOG_PID` names another process
/// (a wrapper that passed its environment on).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec) / 2)
}

fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the
    // call, and CLOCK_MONOTONIC is always available on Linux.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if result != 0 {
        return 0;
    }
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let micros = u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000;
    seconds * 1_000_000 + micros
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_time_is_in_microseconds() {
        let started = std::time::Instant::now();
        let first = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let second = monotonic_usec();
        let elapsed = u64::try_from(started.elapsed().as_micros()).expect("short");
        assert!(first > 0);
        // Both readings are cut to whole microseconds: one more is rounding.
        assert!(
            (40_000..=elapsed + 1).contains(&(second - first)),
            "{first} → {second} in {elapsed} µs"
        );
    }
}
