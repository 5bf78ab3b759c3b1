//! Network listeners in front of a [`crate::BrokerHandle`]: one task per connection, codecs
//! from [`crate::protocol`], no broker logic of their own.

pub mod kafka;
pub mod native;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Accepts connections until `shutdown`, at most `max_connections` at once, each served by
/// `serve(stream, peer)` in a task of its own; a connection over the limit goes to
/// `refuse(stream)` instead. Returns once every connection task has ended (they see the same
/// `shutdown` and finish what they have read).
pub(crate) async fn accept_loop<S, SF, R, RF>(
    listener: TcpListener,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
    serve: S,
    refuse: R,
) where
    S: Fn(TcpStream, SocketAddr) -> SF,
    SF: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream) -> RF,
    RF: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let connection = serve(stream, peer);
                        connections.spawn(async move {
                            connection.await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        // Refusals run apart, so a slow refused peer holds nothing up.
                        tokio::spawn(refuse(stream));
                    }
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}
