//! Readiness for systemd (`Type=notify`): `READY=1` once the node listens and serves its
//! control socket, `STOPPING=1` when it stops, `STATUS=` lines between. A datagram to
//! `$NOTIFY_SOCKET` (a path, or an abstract name starting with `@`), as sd_notify(3)
//! sends it; nothing without that variable.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (`READY=1`, `STATUS=...`, newline-separated) to systemd, if it asked.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else { return };
    if let Err(e) = send(&target, state) {
        tracing::warn!(socket = ?target, error = %e, "cannot notify systemd");
    }
}

fn send(target: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = target.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => <SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(target))?,
    };
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(std::io::Error::other("short datagram"));
    }
    Ok(())
}
