//! The Kafka wire-protocol listener: real Kafka clients (librdkafka/kcat, kafka-python,
//! aiokafka, kafkajs, Java) against a [`BrokerHandle`], as a single-node Kafka cluster.
//!
//! ```text
//! accept ─► connection task: read ─► kafka::FrameDecoder ─► peek_header ─► decode_request
//!              │  Produce: each partition's batches enter its queue here, in arrival order
//!              └► one task per request (handlers in this module's children) ─┐
//!           responder: awaits each request's task in arrival order ─► vectored write ◄──┘
//! ```
//!
//! Rules real clients depend on (see `KAFKA-NOTES.md`):
//! - Responses on a connection go out **in request order** (Java correlates strictly); clients
//!   use separate connections for their group coordinator, so a long-poll fetch holding later
//!   responses back is what they expect. A Produce with `acks=0` gets no response at all; if
//!   it failed, the connection is closed (as Kafka does), after the responses due before it.
//! - ApiVersions is answered for any version: an unsupported one gets error 35 in the v0 body
//!   (clients then retry with a version from the list). Any other unsupported API or version
//!   closes the connection, as Kafka does: the client cannot parse an answer it did not expect.
//! - One broker (node [`KafkaServerConfig::node_id`]) that is controller, coordinator of every
//!   group and leader of every partition, advertised at the address the client connected to
//!   (or at `advertised`), with leader epoch -1 everywhere (no OffsetForLeaderEpoch).
//! - Records are stored and served byte for byte as the client sent them.
//!
//! Malformed or oversized frames close the connection after the responses already due; the
//! broker and other connections never notice.

mod admin;
mod cluster;
mod consumer_groups;
mod data;
mod groups;
mod txn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::broker::BrokerError;
use crate::protocol::kafka::{
    decode_request, encode_api_versions_unsupported, encode_response, peek_header, ApiKey,
    FrameDecoder, KafkaCodecError, Request, RequestHeader, Response,
};
use crate::BrokerHandle;

/// Settings of the Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaServerConfig {
    /// Largest request frame accepted.
    pub max_frame_bytes: usize,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Close a connection silent this long with nothing in flight.
    pub idle_timeout: Duration,
    /// Most outstanding requests per connection.
    pub max_in_flight: usize,
    /// This broker's node id.
    pub node_id: i32,
    /// The `host:port` clients are told to connect to; `None`: the address each client
    /// connected to (right for one machine and for clients reaching it by one name).
    pub advertised: Option<(String, u16)>,
}

impl Default for KafkaServerConfig {
    fn default() -> Self {
        KafkaServerConfig {
            max_frame_bytes: crate::protocol::kafka::DEFAULT_MAX_FRAME_BYTES,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(600),
            max_in_flight: 256,
            node_id: 1,
            advertised: None,
        }
    }
}

/// A running Kafka listener.
#[derive(Debug)]
pub struct KafkaServer {
    running: crate::server::Running,
}

/// What every request handler of a connection sees.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) broker: BrokerHandle,
    pub(crate) node_id: i32,
    pub(crate) host: String,
    pub(crate) port: i32,
    pub(crate) cluster_id: Arc<str>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
}

/// The metadata key under which the cluster id is kept.
const CLUSTER_ID_KEY: &str = "kafka.cluster_id";

/// The cluster id, created (22 characters of URL-safe base64, like Kafka's) on first start and
/// kept in the storage's metadata so clients see the same cluster after a restart.
async fn cluster_id(broker: &BrokerHandle) -> Result<String, BrokerError> {
    let storage = broker.storage();
    let existing = storage.list_metadata().await?;
    if let Some((_, v)) = existing.iter().find(|(k, _)| k == CLUSTER_ID_KEY) {
        if let Ok(s) = std::str::from_utf8(v) {
            return Ok(s.to_string());
        }
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let id: String = (0..22)
        .map(|_| char::from(ALPHABET[rand::random::<usize>() % 64]))
        .collect();
    storage.put_metadata(CLUSTER_ID_KEY, id.as_bytes()).await?;
    Ok(id)
}

impl KafkaServer {
    /// Binds `addr` and serves `broker` until [`KafkaServer::shutdown`].
    ///
    /// # Errors
    /// The address cannot be bound, or the cluster id cannot be read or stored.
    pub async fn bind(
        addr: SocketAddr,
        broker: BrokerHandle,
        config: KafkaServerConfig,
    ) -> std::io::Result<KafkaServer> {
        let cluster: Arc<str> = cluster_id(&broker)
            .await
            .map_err(|e| std::io::Error::other(format!("the cluster id: {e}")))?
            .into();
        let running = crate::server::Running::bind(addr, move |listener, rx| {
            accept_loop(listener, broker, config, cluster, rx)
        })
        .await?;
        Ok(KafkaServer { running })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.running.local_addr()
    }

    /// Stops accepting, lets connections answer what they have read, waits for them.
    pub async fn shutdown(self) {
        self.running.shutdown().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    broker: BrokerHandle,
    config: KafkaServerConfig,
    cluster: Arc<str>,
    shutdown: watch::Receiver<bool>,
) {
    let stop = shutdown.clone();
    let max_connections = config.max_connections;
    super::accept_loop(
        listener,
        max_connections,
        shutdown,
        move |stream, peer| {
            // Advertised: the configured address, or the one this client reached.
            let advertised = match &config.advertised {
                Some((h, p)) => Some((h.clone(), i32::from(*p))),
                None => stream
                    .local_addr()
                    .ok()
                    .map(|a| (a.ip().to_string(), i32::from(a.port()))),
            };
            let session = advertised.map(|(host, port)| Session {
                broker: broker.clone(),
                node_id: config.node_id,
                host,
                port,
                cluster_id: cluster.clone(),
                client_id: String::new(),
                client_host: format!("/{}", peer.ip()),
            });
            let (config, stop) = (config.clone(), stop.clone());
            async move {
                if let Some(session) = session {
                    serve_connection(stream, session, config, stop).await;
                }
            }
        },
        // Over the limit: closed at once (a Kafka client retries with backoff).
        |stream| async move { drop(stream) },
    )
    .await;
}

/// What a request's task hands the responder.
enum Answer {
    /// A response frame's chunks.
    Frame(Vec<Bytes>),
    /// A fetch's response frame, and the turn of the connection's next fetch (dropped once
    /// the frame is written).
    Fetched(Vec<Bytes>, oneshot::Sender<()>),
    /// No response (a Produce with acks=0).
    Nothing,
    /// Close the connection: the response could not be encoded (the client would wait
    /// forever), or an `acks=0` produce failed.
    Fail,
}

/// A response due on the connection.
type Due = JoinHandle<Answer>;

async fn serve_connection(
    stream: TcpStream,
    mut session: Session,
    config: KafkaServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (order_tx, mut order_rx) = mpsc::channel::<Due>(config.max_in_flight.max(1));
    // Requests read and not yet answered (a long poll the responder awaits included), so an
    // idle timeout never closes a connection with a request in flight.
    let outstanding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answered = outstanding.clone();
    let responder = tokio::spawn(async move {
        while let Some(task) = order_rx.recv().await {
            let answer = task.await;
            answered.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let (mut chunks, _held) = match answer {
                Ok(Answer::Frame(chunks)) => (chunks, None),
                Ok(Answer::Fetched(chunks, turn)) => (chunks, Some(turn)),
                Ok(Answer::Nothing) => continue,
                Ok(Answer::Fail) | Err(_) => break,
            };
            if crate::net::write_chunks(&mut wr, &mut chunks)
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let decoder = FrameDecoder::new(config.max_frame_bytes);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // Resolved once the connection's latest fetch is written: the next fetch's turn.
    let mut fetch_turn: Option<oneshot::Receiver<()>> = None;
    'conn: loop {
        let read = tokio::select! {
            _ = shutdown.changed() => break 'conn,
            r = tokio::time::timeout(config.idle_timeout, rd.read_buf(&mut buf)) => r,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Err(_) => {
                if outstanding.load(std::sync::atomic::Ordering::Relaxed) == 0 {
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
                Err(_) => break 'conn,
            };
            let task = match accept_request(&mut session, &mut fetch_turn, frame).await {
                Some(task) => task,
                None => break 'conn,
            };
            outstanding.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if order_tx.send(task).await.is_err() {
                break 'conn;
            }
        }
    }
    drop(order_tx);
    let _ = responder.await;
}

/// Decodes one request and starts answering it; `None` closes the connection (a frame that is
/// not a request this broker serves).
async fn accept_request(
    session: &mut Session,
    fetch_turn: &mut Option<oneshot::Receiver<()>>,
    frame: Bytes,
) -> Option<Due> {
    let header = match peek_header(&frame) {
        Ok(h) => h,
        Err(KafkaCodecError::UnsupportedVersion {
            api_key,
            correlation_id,
            ..
        }) if api_key == ApiKey::ApiVersions as i16 => {
            return Some(ready(encode_api_versions_unsupported(correlation_id)));
        }
        Err(_) => return None,
    };
    if !header.api_key.is_supported(header.api_version) {
        if header.api_key == ApiKey::ApiVersions {
            return Some(ready(encode_api_versions_unsupported(
                header.correlation_id,
            )));
        }
        return None;
    }
    let (header, request) = decode_request(frame).ok()?;
    if let Some(id) = &header.client_id {
        if session.client_id != *id {
            session.client_id.clone_from(id);
        }
    }
    let RequestHeader {
        correlation_id,
        api_version: version,
        ..
    } = header;
    let s = session.clone();
    Some(match request {
        // Produce enters the partitions' queues before the next request is read.
        Request::Produce(req) => {
            let pending = data::start_produce(&s, req, version).await;
            tokio::spawn(async move {
                match pending.finish().await {
                    data::ProduceOutcome::Respond(response) => {
                        encode(correlation_id, version, &response)
                    }
                    data::ProduceOutcome::Silent => Answer::Nothing,
                    data::ProduceOutcome::Close => Answer::Fail,
                }
            })
        }
        // A connection's fetches run one at a time, in request order, each once the one before
        // it is written (as Kafka serves a connection one request at a time): its records are
        // all a connection's fetches hold, within `fetch_max_bytes`, however many it pipelines
        // and whether or not it reads the answers. Clients keep one fetch in flight per broker.
        Request::Fetch(req) => {
            let (turn, next) = oneshot::channel::<()>();
            let previous = fetch_turn.replace(next);
            tokio::spawn(async move {
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                let response = data::fetch(&s, req).await;
                match encode(correlation_id, version, &Response::Fetch(response)) {
                    Answer::Frame(chunks) => Answer::Fetched(chunks, turn),
                    other => other,
                }
            })
        }
        other => tokio::spawn(async move {
            let response = handle(&s, other, version).await;
            encode(correlation_id, version, &response)
        }),
    })
}

/// Runs every request but Produce.
async fn handle(s: &Session, request: Request, version: i16) -> Response {
    match request {
        Request::ApiVersions(_) => Response::ApiVersions(cluster::api_versions()),
        Request::Metadata(r) => Response::Metadata(cluster::metadata(s, r, version).await),
        Request::DescribeCluster(_) => Response::DescribeCluster(cluster::describe_cluster(s)),
        Request::FindCoordinator(r) => {
            Response::FindCoordinator(cluster::find_coordinator(s, r, version))
        }
        // `accept_request` answers fetches itself, one at a time per connection.
        Request::Fetch(r) => Response::Fetch(data::fetch(s, r).await),
        Request::ListOffsets(r) => Response::ListOffsets(data::list_offsets(s, r).await),
        Request::JoinGroup(r) => Response::JoinGroup(groups::join(s, r, version).await),
        Request::SyncGroup(r) => Response::SyncGroup(groups::sync(s, r).await),
        Request::Heartbeat(r) => Response::Heartbeat(groups::heartbeat(s, r).await),
        Request::LeaveGroup(r) => Response::LeaveGroup(groups::leave(s, r, version).await),
        Request::OffsetCommit(r) => Response::OffsetCommit(groups::commit(s, r, version).await),
        Request::OffsetFetch(r) => {
            Response::OffsetFetch(groups::fetch_offsets(s, r, version).await)
        }
        Request::DescribeGroups(r) => Response::DescribeGroups(groups::describe(s, r).await),
        Request::ListGroups(r) => Response::ListGroups(groups::list(s, r).await),
        Request::CreateTopics(r) => Response::CreateTopics(admin::create_topics(s, r).await),
        Request::DeleteTopics(r) => Response::DeleteTopics(admin::delete_topics(s, r).await),
        Request::CreatePartitions(r) => {
            Response::CreatePartitions(admin::create_partitions(s, r).await)
        }
        Request::DescribeConfigs(r) => {
            Response::DescribeConfigs(admin::describe_configs(s, r).await)
        }
        Request::DeleteRecords(r) => Response::DeleteRecords(admin::delete_records(s, r).await),
        Request::DeleteGroups(r) => Response::DeleteGroups(groups::delete(s, r).await),
        Request::OffsetDelete(r) => Response::OffsetDelete(groups::delete_offsets(s, r).await),
        Request::AlterConfigs(r) => Response::AlterConfigs(admin::alter_configs(s, r).await),
        Request::DescribeLogDirs(r) => {
            Response::DescribeLogDirs(admin::describe_log_dirs(s, r).await)
        }
        Request::IncrementalAlterConfigs(r) => {
            Response::IncrementalAlterConfigs(admin::incremental_alter_configs(s, r).await)
        }
        Request::InitProducerId(r) => Response::InitProducerId(admin::init_producer_id(s, r).await),
        Request::AddPartitionsToTxn(r) => {
            Response::AddPartitionsToTxn(txn::add_partitions(s, r).await)
        }
        Request::AddOffsetsToTxn(r) => Response::AddOffsetsToTxn(txn::add_offsets(s, r).await),
        Request::EndTxn(r) => Response::EndTxn(txn::end_txn(s, r).await),
        Request::DescribeTransactions(r) => {
            Response::DescribeTransactions(txn::describe(s, r).await)
        }
        Request::ListTransactions(r) => Response::ListTransactions(txn::list(s, r).await),
        Request::DescribeProducers(r) => {
            Response::DescribeProducers(txn::describe_producers(s, r).await)
        }
        Request::TxnOffsetCommit(r) => {
            Response::TxnOffsetCommit(txn::txn_offset_commit(s, r).await)
        }
        Request::ConsumerGroupHeartbeat(r) => {
            Response::ConsumerGroupHeartbeat(consumer_groups::heartbeat(s, r, version).await)
        }
        Request::ConsumerGroupDescribe(r) => {
            Response::ConsumerGroupDescribe(consumer_groups::describe(s, r).await)
        }
        Request::Produce(_) => unreachable_produce(),
    }
}

/// Produce is answered by [`data::start_produce`]; this keeps `handle` total without a panic.
fn unreachable_produce() -> Response {
    Response::Produce(Default::default())
}

fn encode(correlation_id: i32, version: i16, response: &Response) -> Answer {
    match encode_response(correlation_id, version, response).and_then(|e| e.into_frame_chunks()) {
        Ok(chunks) => Answer::Frame(chunks),
        Err(e) => {
            eprintln!(
                "weir: kafka: cannot encode a {:?} response: {e}",
                response.api_key()
            );
            Answer::Fail
        }
    }
}

fn ready(encoded: Result<crate::protocol::kafka::Encoded, KafkaCodecError>) -> Due {
    let answer = match encoded.and_then(|e| e.into_frame_chunks()) {
        Ok(chunks) => Answer::Frame(chunks),
        Err(_) => Answer::Fail,
    };
    tokio::spawn(async move { answer })
}

/// The keys that occur more than once (a request's entries that Kafka refuses as repeated).
pub(crate) fn repeated<K: std::hash::Hash + Eq>(
    keys: impl IntoIterator<Item = K>,
) -> std::collections::HashSet<K> {
    let (mut seen, mut twice) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    for k in keys {
        if let Some(k) = seen.replace(k) {
            twice.insert(k);
        }
    }
    twice
}

/// The Kafka error code of a broker error (0 for success).
pub(crate) fn code<T>(r: &Result<T, BrokerError>) -> i16 {
    match r {
        Ok(_) => 0,
        Err(e) => e.kafka_code(),
    }
}
