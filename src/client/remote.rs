//! [`RemoteTransport`]: the [`Transport`] of a broker on the other side of a TCP connection,
//! speaking the native protocol. `Producer`, `Consumer` and `Admin` built on it behave as they do
//! on an embedded broker.
//!
//! Two connections: one for data (publish, fetch, offsets) and one for coordination (groups and
//! admin), so heavy data traffic never delays a heartbeat. Each connection pipelines: a writer sends frames as calls arrive, a reader
//! routes responses to their callers by correlation id.
//!
//! Failure: when a connection breaks, every call in flight on it fails with
//! [`BrokerError::ConnectionLost`] (its outcome is unknown: a publish may have been written), and
//! nothing is retried behind the caller's back. The next call reconnects, with exponential
//! backoff between attempts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use weir_storage::{Batch, CommittedOffset, Offset, TopicPartition};

use super::Transport;
use crate::broker::{
    Acks, BrokerError, FetchResult, GroupDescription, GroupState, JoinGroup, JoinResult,
    OffsetSpec, PublishAck, ResetTo, SyncResult, TopicDescription,
};
use crate::protocol::native::{
    decode_frame, EncodedFrame, FrameDecoder, Request, RequestBody, Response, ResponseBody,
    DEFAULT_MAX_FRAME_BYTES,
};

/// Callers waiting for a response, and whether the connection is already gone (set by the
/// reader when it ends, under the same lock, so no caller can register after the last drain).
#[derive(Default)]
struct Waiting {
    callers: HashMap<u64, oneshot::Sender<Response>>,
    closed: Option<String>,
}

type Pending = Arc<Mutex<Waiting>>;

/// One live connection: a writer queue and the callers waiting for responses.
struct Conn {
    frames: mpsc::Sender<(EncodedFrame, ())>,
    pending: Pending,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut rd, mut wr) = stream.into_split();
        let (frames, mut rx) = mpsc::channel::<(EncodedFrame, ())>(256);
        let pending: Pending = Arc::new(Mutex::new(Waiting::default()));
        tokio::spawn(async move { crate::net::write_frames(&mut wr, &mut rx).await });
        let routes = pending.clone();
        tokio::spawn(async move {
            let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
            let mut buf = BytesMut::with_capacity(64 * 1024);
            let reason = 'read: loop {
                match rd.read_buf(&mut buf).await {
                    Ok(0) => break "the broker closed the connection".to_string(),
                    Err(e) => break format!("reading from the broker: {e}"),
                    Ok(_) => {}
                }
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(None) => break,
                        Err(e) => break 'read e.to_string(),
                        Ok(Some(frame)) => match decode_frame::<Response>(&frame) {
                            Ok(resp) if resp.id == 0 => {
                                break 'read resp
                                    .body
                                    .err()
                                    .map_or("connection error".into(), |e| e.message);
                            }
                            Ok(resp) => {
                                let waiter = routes
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .callers
                                    .remove(&resp.id);
                                if let Some(w) = waiter {
                                    let _ = w.send(resp);
                                }
                            }
                            Err(e) => break 'read e.to_string(),
                        },
                    }
                }
            };
            // Everyone still waiting learns the outcome is unknown; later callers are refused.
            let waiting: Vec<_> = {
                let mut w = routes.lock().unwrap_or_else(|e| e.into_inner());
                w.closed = Some(reason.clone());
                w.callers.drain().collect()
            };
            for (id, w) in waiting {
                let _ = w.send(Response {
                    id,
                    body: Err(BrokerError::ConnectionLost(reason.clone()).into()),
                });
            }
        });
        Ok(Conn { frames, pending })
    }

    fn is_open(&self) -> bool {
        !self.frames.is_closed()
            && self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .closed
                .is_none()
    }
}

/// A connection slot that reconnects on demand.
struct Link {
    addr: SocketAddr,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    failures: AtomicU64,
}

impl Link {
    async fn get(&self) -> Result<Arc<Conn>, BrokerError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_open()) {
            return Ok(c.clone());
        }
        let failures = self.failures.load(Ordering::Relaxed);
        if failures > 0 {
            // Exponential backoff: 50 ms, 100 ms, ... up to 5 s.
            let wait = Duration::from_millis(50u64.saturating_mul(1 << failures.min(7)))
                .min(Duration::from_secs(5));
            tokio::time::sleep(wait).await;
        }
        match Conn::open(self.addr).await {
            Ok(c) => {
                self.failures.store(0, Ordering::Relaxed);
                let c = Arc::new(c);
                *slot = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(BrokerError::ConnectionLost(format!(
                    "connecting to {}: {e}",
                    self.addr
                )))
            }
        }
    }
}

/// A broker reached over TCP. Cheap to clone.
#[derive(Clone)]
pub struct RemoteTransport {
    data: Arc<Link>,
    coordination: Arc<Link>,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for RemoteTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTransport")
            .field("addr", &self.data.addr)
            .finish()
    }
}

impl RemoteTransport {
    /// Connects to a broker's native listener (both connections, so a wrong address fails here).
    ///
    /// # Errors
    /// [`BrokerError::ConnectionLost`] when the broker cannot be reached.
    pub async fn connect(addr: SocketAddr) -> Result<RemoteTransport, BrokerError> {
        let link = |addr| {
            Arc::new(Link {
                addr,
                conn: tokio::sync::Mutex::new(None),
                failures: AtomicU64::new(0),
            })
        };
        let t = RemoteTransport {
            data: link(addr),
            coordination: link(addr),
            next_id: Arc::new(AtomicU64::new(1)),
        };
        t.data.get().await?;
        t.coordination.get().await?;
        Ok(t)
    }

    /// Sends a request and returns the wait for its response: calls made one after the other
    /// are written to the connection in that order.
    async fn send(
        &self,
        link: &Link,
        body: RequestBody,
    ) -> Result<oneshot::Receiver<Response>, BrokerError> {
        let conn = link.get().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Request { id, body }
            .encode()
            .map_err(|e| BrokerError::InvalidRequest(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        {
            let mut w = conn.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reason) = &w.closed {
                return Err(BrokerError::ConnectionLost(reason.clone()));
            }
            w.callers.insert(id, tx);
        }
        if conn.frames.send((frame, ())).await.is_err() {
            conn.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .callers
                .remove(&id);
            return Err(BrokerError::ConnectionLost("the connection closed".into()));
        }
        Ok(rx)
    }

    async fn call(&self, link: &Link, body: RequestBody) -> Result<ResponseBody, BrokerError> {
        let rx = self.send(link, body).await?;
        answer(rx).await
    }

    async fn data(&self, body: RequestBody) -> Result<ResponseBody, BrokerError> {
        self.call(&self.data, body).await
    }

    async fn coord(&self, body: RequestBody) -> Result<ResponseBody, BrokerError> {
        self.call(&self.coordination, body).await
    }
}

/// A response's outcome; a connection that went away first means the outcome is unknown.
async fn answer(rx: oneshot::Receiver<Response>) -> Result<ResponseBody, BrokerError> {
    let resp = rx
        .await
        .map_err(|_| BrokerError::ConnectionLost("the connection closed".into()))?;
    resp.body.map_err(|e| e.into_broker_error())
}

fn unexpected(r: ResponseBody) -> BrokerError {
    BrokerError::InvalidRequest(format!("unexpected response {r:?}"))
}

#[async_trait]
impl Transport for RemoteTransport {
    async fn publish_queued(
        &self,
        topic: &str,
        partition: i32,
        batches: Vec<Batch>,
        acks: Acks,
    ) -> Result<crate::client::transport::PublishOutcome, BrokerError> {
        let rx = self
            .send(
                &self.data,
                RequestBody::Publish {
                    topic: topic.to_string(),
                    partition: Some(partition),
                    batches,
                    acks,
                },
            )
            .await?;
        Ok(Box::pin(async move {
            match answer(rx).await? {
                ResponseBody::Published { partition, ack } => Ok((partition, ack)),
                r => Err(unexpected(r)),
            }
        }))
    }

    async fn init_producer_id(
        &self,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), BrokerError> {
        match self
            .coord(RequestBody::InitProducerId {
                producer_id,
                producer_epoch,
            })
            .await?
        {
            ResponseBody::ProducerId {
                producer_id,
                producer_epoch,
            } => Ok((producer_id, producer_epoch)),
            r => Err(unexpected(r)),
        }
    }

    async fn publish(
        &self,
        topic: &str,
        partition: Option<i32>,
        batches: Vec<Batch>,
        acks: Acks,
    ) -> Result<(i32, PublishAck), BrokerError> {
        let body = RequestBody::Publish {
            topic: topic.to_string(),
            partition,
            batches,
            acks,
        };
        match self.data(body).await? {
            ResponseBody::Published { partition, ack } => Ok((partition, ack)),
            r => Err(unexpected(r)),
        }
    }
    async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        from: Offset,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
    ) -> Result<FetchResult, BrokerError> {
        let body = RequestBody::Fetch {
            topic: topic.to_string(),
            partition,
            from,
            max_bytes,
            min_bytes,
            max_wait,
        };
        match self.data(body).await? {
            ResponseBody::Fetched(f) => Ok(f),
            r => Err(unexpected(r)),
        }
    }
    async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> Result<Option<Offset>, BrokerError> {
        let body = RequestBody::ListOffset {
            topic: topic.to_string(),
            partition,
            spec,
        };
        match self.data(body).await? {
            ResponseBody::Offset(o) => Ok(o),
            r => Err(unexpected(r)),
        }
    }
    async fn partitions(&self, topic: &str, create: bool) -> Result<u32, BrokerError> {
        let body = RequestBody::Partitions {
            topic: topic.to_string(),
            create,
        };
        match self.coord(body).await? {
            ResponseBody::Partitions(n) => Ok(n),
            r => Err(unexpected(r)),
        }
    }
    async fn join_group(&self, group: &str, join: JoinGroup) -> Result<JoinResult, BrokerError> {
        let body = RequestBody::JoinGroup {
            group: group.to_string(),
            join,
        };
        match self.coord(body).await? {
            ResponseBody::Joined(j) => Ok(j),
            r => Err(unexpected(r)),
        }
    }
    async fn sync_group(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<SyncResult, BrokerError> {
        let body = RequestBody::SyncGroup {
            group: group.to_string(),
            member_id: member_id.to_string(),
            generation,
            assignments,
        };
        match self.coord(body).await? {
            ResponseBody::Synced(s) => Ok(s),
            r => Err(unexpected(r)),
        }
    }
    async fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), BrokerError> {
        let body = RequestBody::Heartbeat {
            group: group.to_string(),
            member_id: member_id.to_string(),
            generation,
        };
        self.coord(body).await.map(|_| ())
    }
    async fn leave_group(&self, group: &str, member_id: &str) -> Result<(), BrokerError> {
        let body = RequestBody::LeaveGroup {
            group: group.to_string(),
            member_id: member_id.to_string(),
        };
        self.coord(body).await.map(|_| ())
    }
    async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    ) -> Result<(), BrokerError> {
        let body = RequestBody::CommitOffsets {
            group: group.to_string(),
            member_id: member_id.to_string(),
            generation,
            offsets,
        };
        self.coord(body).await.map(|_| ())
    }
    async fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<TopicPartition>>,
    ) -> Result<Vec<(TopicPartition, CommittedOffset)>, BrokerError> {
        let body = RequestBody::FetchOffsets {
            group: group.to_string(),
            partitions,
        };
        match self.coord(body).await? {
            ResponseBody::Offsets(o) => Ok(o),
            r => Err(unexpected(r)),
        }
    }
    async fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        configs: Vec<(String, String)>,
    ) -> Result<(), BrokerError> {
        let body = RequestBody::CreateTopic {
            name: name.to_string(),
            partitions,
            configs,
        };
        self.coord(body).await.map(|_| ())
    }
    async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let body = RequestBody::DeleteTopic {
            name: name.to_string(),
        };
        self.coord(body).await.map(|_| ())
    }
    async fn create_partitions(&self, name: &str, total: u32) -> Result<(), BrokerError> {
        let body = RequestBody::CreatePartitions {
            name: name.to_string(),
            total,
        };
        self.coord(body).await.map(|_| ())
    }
    async fn alter_topic_config(
        &self,
        name: &str,
        set: Vec<(String, String)>,
        reset: Vec<String>,
    ) -> Result<(), BrokerError> {
        let body = RequestBody::AlterTopicConfig {
            name: name.to_string(),
            set,
            reset,
        };
        self.coord(body).await.map(|_| ())
    }
    async fn list_topics(&self) -> Result<Vec<String>, BrokerError> {
        match self.coord(RequestBody::ListTopics).await? {
            ResponseBody::Topics(t) => Ok(t),
            r => Err(unexpected(r)),
        }
    }
    async fn describe_topic(&self, name: &str) -> Result<TopicDescription, BrokerError> {
        let body = RequestBody::DescribeTopic {
            name: name.to_string(),
        };
        match self.coord(body).await? {
            ResponseBody::Topic(t) => Ok(t),
            r => Err(unexpected(r)),
        }
    }
    async fn list_groups(&self) -> Result<Vec<(String, GroupState)>, BrokerError> {
        match self.coord(RequestBody::ListGroups).await? {
            ResponseBody::Groups(g) => Ok(g),
            r => Err(unexpected(r)),
        }
    }
    async fn describe_group(&self, group: &str) -> Result<GroupDescription, BrokerError> {
        let body = RequestBody::DescribeGroup {
            group: group.to_string(),
        };
        match self.coord(body).await? {
            ResponseBody::Group(g) => Ok(g),
            r => Err(unexpected(r)),
        }
    }
    async fn delete_group(&self, group: &str) -> Result<(), BrokerError> {
        let body = RequestBody::DeleteGroup {
            group: group.to_string(),
        };
        self.coord(body).await.map(|_| ())
    }
    async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<(TopicPartition, Offset)>, BrokerError> {
        let body = RequestBody::ResetOffsets {
            group: group.to_string(),
            topic: topic.to_string(),
            to,
        };
        match self.coord(body).await? {
            ResponseBody::Reset(r) => Ok(r),
            r => Err(unexpected(r)),
        }
    }
}
