//! The native protocol's TCP server.
//!
//! ```text
//! accept ─► connection task: read ─► FrameDecoder ─► Request ─► tokio task per request ─┐
//!                                                                                        │
//!           writer task: write each response as it completes (vectored) ◄────────────────┘
//! ```
//!
//! Requests on one connection run concurrently (pipelining) and each response goes out as soon
//! as it is ready, carrying its request's id: a long-poll fetch never holds back the
//! acknowledgement of a publish sent after it on the same connection (clients match responses
//! by id). Publishes are put into their partition's queue by the connection task itself, in
//! arrival order, so pipelined publishes to one partition are appended in the order sent, and
//! their acknowledgements are produced in that order. At most `max_in_flight` requests per
//! connection are outstanding; beyond that the connection stops reading (backpressure). The
//! records a connection's fetches hold, from the read until the answer is written, stay within
//! `[broker] fetch_max_bytes`, or one batch when a topic's batches may be larger
//! (`FetchMemory`). A frame over `max_frame_bytes`, or a body that
//! is not a request, gets an error frame (correlation id 0) and the connection is closed; no
//! other connection notices. Connections above `max_connections` get an error frame and are
//! closed at once. A connection silent for `idle_timeout` with nothing in flight is closed.
//! [`NativeServer::shutdown`] stops accepting, lets every connection finish what it has read,
//! and returns once they are closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use weir_storage::Batch;

use crate::broker::{BrokerError, FetchResult, Isolation};
use crate::client::Transport;
use crate::protocol::native::{
    decode_frame, encode_frame, EncodedFrame, FrameDecoder, Request, RequestBody, Response,
    ResponseBody, WireError,
};
use crate::BrokerHandle;

/// Limits of the native listener.
#[derive(Debug, Clone, Copy)]
pub struct NativeServerConfig {
    /// Largest frame accepted.
    pub max_frame_bytes: usize,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Close a connection silent this long with nothing in flight.
    pub idle_timeout: Duration,
    /// Most outstanding requests per connection.
    pub max_in_flight: usize,
}

impl Default for NativeServerConfig {
    fn default() -> Self {
        NativeServerConfig {
            max_frame_bytes: crate::protocol::native::DEFAULT_MAX_FRAME_BYTES,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(600),
            max_in_flight: 256,
        }
    }
}

/// A running native listener.
#[derive(Debug)]
pub struct NativeServer {
    running: crate::server::Running,
}

/// The code of "too many connections".
pub const TOO_MANY_CONNECTIONS: u16 = 102;

impl NativeServer {
    /// Binds `addr` and serves `broker` until [`NativeServer::shutdown`].
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(
        addr: SocketAddr,
        broker: BrokerHandle,
        config: NativeServerConfig,
    ) -> std::io::Result<NativeServer> {
        let running = crate::server::Running::bind(addr, move |listener, rx| {
            accept_loop(listener, broker, config, rx)
        })
        .await?;
        Ok(NativeServer { running })
    }

    /// The address it listens on (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.running.local_addr()
    }

    /// Stops accepting, lets connections finish their in-flight requests, waits for them.
    pub async fn shutdown(self) {
        self.running.shutdown().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    broker: BrokerHandle,
    config: NativeServerConfig,
    shutdown: watch::Receiver<bool>,
) {
    let stop = shutdown.clone();
    super::accept_loop(
        listener,
        config.max_connections,
        shutdown,
        move |stream, peer| serve_connection(stream, peer, broker.clone(), config, stop.clone()),
        move |mut stream| async move {
            let e = WireError {
                code: TOO_MANY_CONNECTIONS,
                message: format!("connection limit of {} reached", config.max_connections),
                error: None,
            };
            if let Ok(frame) = encode_frame(&Response {
                id: 0,
                body: Err(e),
            }) {
                let _ = stream.write_all(&frame).await;
            }
        },
    )
    .await;
}

/// The records one connection's fetches may hold in memory, from the read until the response
/// is written to the socket: `[broker] fetch_max_bytes`, in permits of one byte.
///
/// Each fetch is charged its own limit before it reads, at least its topic's
/// `max.message.bytes` (a read's first batch may exceed the limit, but not that) and at most
/// the whole budget (a topic whose batches may be larger than the budget is read one fetch at
/// a time). A fetch that has to wait for data waits without its charge (positions only), then
/// is charged again to read. Pipelined fetches beyond the budget wait their turn: a client
/// that requests without reading its responses cannot make the broker buffer more than the
/// budget, or one batch when a batch is larger (only a batch written before its topic's
/// `max.message.bytes` was lowered can exceed its charge).
#[derive(Debug, Clone)]
struct FetchMemory {
    permits: Arc<Semaphore>,
    most: usize,
}

/// A fetch's charge on its connection's [`FetchMemory`], dropped once its response is written.
type Held = Option<OwnedSemaphorePermit>;

impl FetchMemory {
    /// A connection's budget under `broker`'s configuration.
    fn for_broker(broker: &BrokerHandle) -> FetchMemory {
        let c = broker.config();
        // `fetch_max_bytes` is validated to fit an i32; the permits are counted in a u32.
        let most = c.broker.fetch_max_bytes.clamp(1, u32::MAX as usize);
        FetchMemory {
            permits: Arc::new(Semaphore::new(most)),
            most,
        }
    }

    /// Waits until a fetch of up to `max_bytes` may read batches of up to `largest_batch`.
    async fn charge(&self, max_bytes: usize, largest_batch: usize) -> Held {
        let n = max_bytes.max(largest_batch).clamp(1, self.most);
        // The semaphore is never closed; `n` fits a u32 (see `for_broker`).
        self.permits
            .clone()
            .acquire_many_owned(u32::try_from(n).unwrap_or(u32::MAX))
            .await
            .ok()
    }
}

/// Runs one request; a fetch comes back with its charge on the connection's fetch memory.
async fn answer(
    broker: &BrokerHandle,
    memory: &FetchMemory,
    body: RequestBody,
) -> (Result<ResponseBody, BrokerError>, Held) {
    let RequestBody::Fetch {
        topic,
        partition,
        from,
        max_bytes,
        min_bytes,
        max_wait,
    } = body
    else {
        return (dispatch(broker, body).await, None);
    };
    let max_bytes = max_bytes.max(1);
    // The default for an unknown topic, whose read fails.
    let largest_batch = broker
        .max_message_bytes(&topic)
        .unwrap_or(broker.config().topic_defaults.max_message_bytes as usize);
    let fetched =
        |held: Held, r: Result<FetchResult, BrokerError>| (r.map(ResponseBody::Fetched), held);
    let read_now = || {
        broker.fetch(
            &topic,
            partition,
            from,
            max_bytes,
            min_bytes,
            Duration::ZERO,
        )
    };
    // Read what is there now, within the charge.
    let held = memory.charge(max_bytes, largest_batch).await;
    let now = read_now().await;
    let enough = now.as_ref().map_or(true, |f| {
        f.batches.iter().map(Batch::len).sum::<usize>() >= min_bytes.max(1)
    });
    if enough || max_wait.is_zero() {
        return fetched(held, now);
    }
    // Too little: wait for more without holding memory (offsets only), then read again.
    drop((now, held));
    let waited = broker
        .fetch_isolated(
            &topic,
            partition,
            from,
            (0, min_bytes),
            max_wait,
            Isolation::ReadCommitted,
        )
        .await;
    if let Err(e) = waited {
        return (Err(e), None);
    }
    let held = memory.charge(max_bytes, largest_batch).await;
    fetched(held, read_now().await)
}

/// Runs one request against the broker.
async fn dispatch(broker: &BrokerHandle, body: RequestBody) -> Result<ResponseBody, BrokerError> {
    let t: &dyn Transport = broker;
    Ok(match body {
        RequestBody::Publish {
            topic,
            partition,
            batches,
            acks,
        } => {
            let (partition, ack) = t.publish(&topic, partition, batches, acks).await?;
            ResponseBody::Published { partition, ack }
        }
        RequestBody::Fetch {
            topic,
            partition,
            from,
            max_bytes,
            min_bytes,
            max_wait,
        } => ResponseBody::Fetched(
            t.fetch(&topic, partition, from, max_bytes, min_bytes, max_wait)
                .await?,
        ),
        RequestBody::ListOffset {
            topic,
            partition,
            spec,
        } => ResponseBody::Offset(t.list_offset(&topic, partition, spec).await?),
        RequestBody::Partitions { topic, create } => {
            ResponseBody::Partitions(t.partitions(&topic, create).await?)
        }
        RequestBody::CreateTopic {
            name,
            partitions,
            configs,
        } => {
            t.create_topic(&name, partitions, configs).await?;
            ResponseBody::Done
        }
        RequestBody::DeleteTopic { name } => {
            t.delete_topic(&name).await?;
            ResponseBody::Done
        }
        RequestBody::CreatePartitions { name, total } => {
            t.create_partitions(&name, total).await?;
            ResponseBody::Done
        }
        RequestBody::AlterTopicConfig { name, set, reset } => {
            t.alter_topic_config(&name, set, reset).await?;
            ResponseBody::Done
        }
        RequestBody::ListTopics => ResponseBody::Topics(t.list_topics().await?),
        RequestBody::DescribeTopic { name } => ResponseBody::Topic(t.describe_topic(&name).await?),
        RequestBody::JoinGroup { group, join } => {
            ResponseBody::Joined(t.join_group(&group, join).await?)
        }
        RequestBody::SyncGroup {
            group,
            member_id,
            generation,
            assignments,
        } => ResponseBody::Synced(
            t.sync_group(&group, &member_id, generation, assignments)
                .await?,
        ),
        RequestBody::Heartbeat {
            group,
            member_id,
            generation,
        } => {
            t.heartbeat(&group, &member_id, generation).await?;
            ResponseBody::Done
        }
        RequestBody::LeaveGroup { group, member_id } => {
            t.leave_group(&group, &member_id).await?;
            ResponseBody::Done
        }
        RequestBody::CommitOffsets {
            group,
            member_id,
            generation,
            offsets,
        } => {
            t.commit_offsets(&group, &member_id, generation, offsets)
                .await?;
            ResponseBody::Done
        }
        RequestBody::FetchOffsets { group, partitions } => {
            ResponseBody::Offsets(t.fetch_offsets(&group, partitions).await?)
        }
        RequestBody::ListGroups => ResponseBody::Groups(t.list_groups().await?),
        RequestBody::DescribeGroup { group } => {
            ResponseBody::Group(t.describe_group(&group).await?)
        }
        RequestBody::DeleteGroup { group } => {
            t.delete_group(&group).await?;
            ResponseBody::Done
        }
        RequestBody::InitProducerId {
            producer_id,
            producer_epoch,
        } => {
            let (producer_id, producer_epoch) =
                t.init_producer_id(producer_id, producer_epoch).await?;
            ResponseBody::ProducerId {
                producer_id,
                producer_epoch,
            }
        }
        RequestBody::ResetOffsets { group, topic, to } => {
            ResponseBody::Reset(t.reset_offsets(&group, &topic, to).await?)
        }
    })
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: BrokerHandle,
    config: NativeServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let max_in_flight = config.max_in_flight.max(1);
    // Responses go to the writer as they complete; frames queued meanwhile share a write.
    let (frames_tx, mut frames_rx) = mpsc::channel::<(EncodedFrame, Held)>(max_in_flight);
    let fetch_memory = FetchMemory::for_broker(&broker);
    let writer = tokio::spawn(async move {
        crate::net::write_frames(&mut wr, &mut frames_rx).await;
        let _ = wr.shutdown().await;
    });
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    let decoder = FrameDecoder::new(config.max_frame_bytes);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut failure = None;
    'conn: loop {
        while tasks.try_join_next().is_some() {}
        let read = tokio::select! {
            _ = shutdown.changed() => break 'conn,
            r = tokio::time::timeout(config.idle_timeout, rd.read_buf(&mut buf)) => r,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Err(_) => {
                // Idle: close unless requests are still running.
                while tasks.try_join_next().is_some() {}
                if tasks.is_empty() {
                    break;
                }
                continue;
            }
            Ok(Ok(_)) => {}
        }
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e);
                    break 'conn;
                }
            };
            let request: Request = match decode_frame(&frame) {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(e);
                    break 'conn;
                }
            };
            // Beyond `max_in_flight` outstanding requests, stop reading (backpressure).
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break 'conn;
            };
            let id = request.id;
            let frames = frames_tx.clone();
            // Publishes enter their partition's queue here, in arrival order; only waiting for
            // the append runs in the request's own task.
            if let RequestBody::Publish {
                topic,
                partition,
                batches,
                acks,
            } = request.body
            {
                let outcome = broker
                    .publish_in_order(&topic, partition, batches, acks)
                    .await;
                tasks.spawn(async move {
                    let body = outcome
                        .await
                        .map(|(partition, ack)| ResponseBody::Published { partition, ack })
                        .map_err(WireError::from);
                    let _ = frames.send((respond(id, body), None)).await;
                    drop(permit);
                });
            } else {
                let broker = broker.clone();
                let mut body = request.body;
                // Group members are described with the address they connect from, as Kafka
                // does ("/127.0.0.1"), whatever the client claimed.
                if let RequestBody::JoinGroup { join, .. } = &mut body {
                    join.client_host = format!("/{}", peer.ip());
                }
                // A long-poll fetch is cut short by a shutdown (it changes nothing, and a
                // graceful stop should not wait out its `max_wait`).
                let is_fetch = matches!(body, RequestBody::Fetch { .. });
                let mut stopping = shutdown.clone();
                let memory = fetch_memory.clone();
                tasks.spawn(async move {
                    let (body, held) = tokio::select! {
                        r = answer(&broker, &memory, body) => r,
                        _ = stopping.wait_for(|stop| *stop), if is_fetch => {
                            (Err(BrokerError::ShuttingDown), None)
                        }
                    };
                    let body = body.map_err(WireError::from);
                    let _ = frames.send((respond(id, body), held)).await;
                    drop(permit);
                });
            }
        }
    }
    // Requests already read are answered before the connection closes; a bad frame's error
    // frame comes last.
    while tasks.join_next().await.is_some() {}
    if let Some(e) = failure {
        let _ = frames_tx
            .send((respond(0, Err(WireError::from(e))), None))
            .await;
    }
    drop(frames_tx);
    let _ = writer.await;
}

/// Encodes a response frame (an encoding failure becomes an error response).
fn respond(id: u64, body: Result<ResponseBody, WireError>) -> EncodedFrame {
    Response { id, body }.encode().unwrap_or_else(|e| {
        Response {
            id,
            body: Err(WireError::from(e)),
        }
        .encode()
        .unwrap_or_default()
    })
}
