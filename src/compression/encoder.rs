//! One response's encoder, fed chunk by chunk: the adaptors of
//! `async-compression` over flate2, brotli and zstd, writing into memory.
//!
//! Writing into a `Vec` never waits, so every poll here is ready at once
//! and is driven with a no-op waker; the body that owns the encoder does
//! the real waiting, on the body it compresses.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use async_compression::brotli::EncoderParams as BrotliParams;
use async_compression::tokio::write::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use async_compression::zstd::CParameter as ZstdParameter;
use async_compression::Level;
use bytes::Bytes;
use tokio::io::AsyncWrite;

use super::Coding;

/// A streaming encoder into memory.
#[derive(Debug)]
pub enum Encoder {
    /// Boxed: brotli's state is kilobytes, the others' a pointer or two.
    Brotli(Box<BrotliEncoder<Vec<u8>>>),
    Zstd(ZstdEncoder<Vec<u8>>),
    Gzip(GzipEncoder<Vec<u8>>),
}

/// The largest window (log2 bytes) zstd gets: 512 KiB, as nginx's brotli
/// module uses. The default (2 MiB at level 3) gains little on web
/// responses and costs its memory for every one.
const MAX_ZSTD_WINDOW_LOG: u32 = 19;

/// Brotli's: 64 KiB. Brotli clears its whole window for every response (a
/// quarter of its CPU on 64 KiB bodies at its default of 4 MiB), and the
/// window is memory held while a response streams (measured with 200
/// responses paused mid-body at level 4: 2.5 MiB of RSS each at window 19,
/// 2.0 MiB at 16, of which 0.3 MiB is the same stream uncompressed).
const MAX_BROTLI_WINDOW_LOG: u32 = 16;

/// A window just larger than a body of `size` bytes (brotli's and zstd's
/// smallest is 1 KiB), or `max` for a body of unknown length.
fn window_log(size: Option<u64>, max: u32) -> u32 {
    size.map_or(max, |size| {
        (u64::BITS - size.leading_zeros()).clamp(10, max)
    })
}

impl Encoder {
    /// An encoder for a body of `size` bytes, if known.
    pub fn new(coding: Coding, level: i32, size: Option<u64>) -> Encoder {
        let quality = Level::Precise(level);
        match coding {
            Coding::Brotli => {
                let mut params = BrotliParams::default()
                    .quality(quality)
                    .window_size(window_log(size, MAX_BROTLI_WINDOW_LOG) as i32);
                if let Some(size) = size.and_then(|size| usize::try_from(size).ok()) {
                    params = params.size_hint(size);
                }
                Encoder::Brotli(Box::new(BrotliEncoder::with_params(Vec::new(), params)))
            }
            Coding::Zstd => Encoder::Zstd(ZstdEncoder::with_quality_and_params(
                Vec::new(),
                quality,
                &[ZstdParameter::window_log(window_log(
                    size,
                    MAX_ZSTD_WINDOW_LOG,
                ))],
            )),
            Coding::Gzip => Encoder::Gzip(GzipEncoder::with_quality(Vec::new(), quality)),
        }
    }

    /// Compresses `input`; returns what the encoder let out so far (often
    /// nothing: it keeps a window before it emits).
    pub fn write(&mut self, mut input: &[u8]) -> io::Result<Bytes> {
        while !input.is_empty() {
            let written = now(|cx| self.writer().poll_write(cx, input))?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            input = &input[written..];
        }
        Ok(self.take())
    }

    /// Everything written so far, compressed, for a body that pauses: the
    /// client gets what the backend sent without waiting for more.
    pub fn flush(&mut self) -> io::Result<Bytes> {
        now(|cx| self.writer().poll_flush(cx))?;
        Ok(self.take())
    }

    /// The end of the stream: the rest and the format's trailer.
    pub fn finish(&mut self) -> io::Result<Bytes> {
        now(|cx| self.writer().poll_shutdown(cx))?;
        Ok(self.take())
    }

    fn writer(&mut self) -> Pin<&mut (dyn AsyncWrite + Unpin)> {
        let writer: &mut (dyn AsyncWrite + Unpin) = match self {
            Encoder::Brotli(encoder) => &mut **encoder,
            Encoder::Zstd(encoder) => encoder,
            Encoder::Gzip(encoder) => encoder,
        };
        Pin::new(writer)
    }

    fn take(&mut self) -> Bytes {
        let output = match self {
            Encoder::Brotli(encoder) => encoder.get_mut(),
            Encoder::Zstd(encoder) => encoder.get_mut(),
            Encoder::Gzip(encoder) => encoder.get_mut(),
        };
        Bytes::from(std::mem::take(output))
    }
}

/// `content` compressed whole, for the file cache.
pub fn compress_whole(coding: Coding, level: i32, content: &[u8]) -> io::Result<Bytes> {
    let mut encoder = Encoder::new(coding, level, Some(content.len() as u64));
    let head = encoder.write(content)?;
    let tail = encoder.finish()?;
    if head.is_empty() {
        return Ok(tail);
    }
    let mut whole = Vec::with_capacity(head.len() + tail.len());
    whole.extend_from_slice(&head);
    whole.extend_from_slice(&tail);
    Ok(Bytes::from(whole))
}

/// Runs one poll that cannot wait (the sink is memory).
fn now<T>(poll: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>) -> io::Result<T> {
    match poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(io::Error::other("an in-memory encoder asked to wait")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_and_whole_output_decode_to_the_input() {
        let input: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {i} of a text that repeats\n").into_bytes())
            .take(300_000)
            .collect();
        for coding in Coding::ALL {
            let whole = compress_whole(coding, coding.default_level(), &input).unwrap();
            assert!(whole.len() < input.len() / 4, "{coding:?}: {}", whole.len());
            let mut encoder = Encoder::new(coding, coding.default_level(), None);
            let mut streamed = Vec::new();
            for chunk in input.chunks(16 * 1024) {
                streamed.extend_from_slice(&encoder.write(chunk).unwrap());
            }
            streamed.extend_from_slice(&encoder.flush().unwrap());
            streamed.extend_from_slice(&encoder.finish().unwrap());
            assert_eq!(decode(coding, &streamed), input, "{coding:?}");
            assert_eq!(decode(coding, &whole), input, "{coding:?}");
        }
    }

    /// Decoded by the same libraries' decoders, through the same adaptors.
    fn decode(coding: Coding, data: &[u8]) -> Vec<u8> {
        use async_compression::tokio::write::{BrotliDecoder, GzipDecoder, ZstdDecoder};
        use tokio::io::AsyncWriteExt;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            match coding {
                Coding::Brotli => {
                    let mut decoder = BrotliDecoder::new(Vec::new());
                    decoder.write_all(data).await.unwrap();
                    decoder.shutdown().await.unwrap();
                    decoder.into_inner()
                }
                Coding::Zstd => {
                    let mut decoder = ZstdDecoder::new(Vec::new());
                    decoder.write_all(data).await.unwrap();
                    decoder.shutdown().await.unwrap();
                    decoder.into_inner()
                }
                Coding::Gzip => {
                    let mut decoder = GzipDecoder::new(Vec::new());
                    decoder.write_all(data).await.unwrap();
                    decoder.shutdown().await.unwrap();
                    decoder.into_inner()
                }
            }
        })
    }
}
