//! Socket helpers shared by the servers and the client.

use std::io::IoSlice;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

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
