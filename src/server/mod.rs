//! Network listeners in front of a [`crate::BrokerHandle`]: one task per connection, codecs
//! from [`crate::protocol`], no broker logic of their own.

pub mod kafka;
pub mod native;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// A bound listener's accept loop, running: its address and the switch that stops it.
#[derive(Debug)]
pub(crate) struct Running {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Binds `addr` and spawns `run(listener, shutdown)`.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub(crate) async fn bind<F, Fut>(addr: SocketAddr, run: F) -> std::io::Result<Running>
    where
        F: FnOnce(TcpListener, watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(run(listener, rx));
        Ok(Running {
            local_addr,
            shutdown,
            task,
        })
    }

    /// The address it listens on (with the port the OS chose for port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets connections finish what they have read, waits for them.
    pub(crate) async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

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
