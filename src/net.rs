//! Socket helpers shared by the servers and the client.

use std::io::IoSlice;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::protocol::native::EncodedFrame;

/// Writes the frames arriving on `frames` until the channel closes or a write fails; frames
/// queued while one is written go out together in the next vectored write. What comes with a
/// frame (`H`: a fetch's memory charge) is dropped once the frame is written.
pub async fn write_frames<W: AsyncWrite + Unpin, H>(
    w: &mut W,
    frames: &mut mpsc::Receiver<(EncodedFrame, H)>,
) {
    let (mut chunks, mut held) = (Vec::new(), Vec::new());
    while let Some((frame, h)) = frames.recv().await {
        chunks.extend(frame.into_chunks());
        held.push(h);
        while chunks.len() < 256 {
            match frames.try_recv() {
                Ok((f, h)) => {
                    chunks.extend(f.into_chunks());
                    held.push(h);
                }
                Err(_) => break,
            }
        }
        if write_chunks(w, &mut chunks).await.is_err() {
            break;
        }
        chunks.clear();
        held.clear();
    }
}

/// Writes `chunks` in order with vectored writes (one syscall for many chunks where the socket
/// takes them), so large payloads go from their own buffers to the socket without a copy.
///
/// # Errors
/// The writer's error.
pub async fn write_chunks<W: AsyncWrite + Unpin>(
    w: &mut W,
    chunks: &mut [Bytes],
) -> std::io::Result<()> {
    let mut first = 0;
    while first < chunks.len() {
        let slices: Vec<IoSlice<'_>> = chunks[first..]
            .iter()
            .take(64)
            .map(|c| IoSlice::new(c))
            .collect();
        let mut written = w.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let Some(c) = chunks.get_mut(first) else {
                break;
            };
            let n = written.min(c.len());
            c.advance(n);
            written -= n;
            if c.is_empty() {
                first += 1;
            }
        }
        // Skip chunks that were empty to begin with.
        while chunks.get(first).is_some_and(Bytes::is_empty) {
            first += 1;
        }
    }
    Ok(())
}
