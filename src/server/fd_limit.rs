//! The open-file limit. Each proxied WebSocket session or HTTP request holds
//! two descriptors (client and backend), so the default soft limit of 1024
//! that many systems and container runtimes give would cap a gateway at
//! about 500 sessions. Like nginx's `worker_rlimit_nofile` and Go's
//! runtime, wsgate raises the soft limit to the hard limit at startup and
//! says when even that is below what `max_connections` can use.

/// Descriptors kept aside for listeners, static files being read, health
/// checks and the process itself.
const RESERVED: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs the result.
pub fn raise(max_connections: usize) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-file limit");
            return;
        }
    };
    let needed = 2 * max_connections as u64 + RESERVED;
    if limit < needed {
        tracing::warn!(
            limit,
            max_connections,
            needed,
            "the open-file limit is below what max_connections can use: accepts past it back off; \
             raise LimitNOFILE (systemd) or ulimit -n, or lower max_connections"
        );
    } else {
        tracing::info!(limit, "open-file limit");
    }
}
