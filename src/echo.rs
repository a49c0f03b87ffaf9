//! `wsgate echo-server`: a plain WebSocket echo backend for smoke tests and
//! the demo, built on a maintained WebSocket library (tungstenite).

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Accepts connections until the task is dropped; each echoes text and
/// binary messages back and answers pings and closes as RFC 6455 says.
pub async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo(stream));
            }
            Err(error) => {
                tracing::warn!(%error, "echo server accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn echo(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut socket = match tokio_tungstenite::accept_async(stream).await {
        Ok(socket) => socket,
        Err(error) => {
            tracing::debug!(%error, "echo handshake failed");
            return;
        }
    };
    while let Some(message) = socket.next().await {
        let reply = match message {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => message,
            // tungstenite answers pings and closes itself while reading.
            Ok(_) => continue,
            Err(error) => {
                tracing::debug!(%error, "echo connection ended");
                return;
            }
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}
