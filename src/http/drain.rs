//! Small request bodies are read in full before the handler runs. actix closes a kept-alive
//! connection (`connection: close`) when a handler answers without reading the whole
//! body, as the heartbeat or a logout without a refresh token do; frontends post `{}` to
//! them, and behind a TLS proxy every such request would cost a new handshake. Reading
//! first and handing the handler the buffered bytes keeps the connection whatever the
//! handler reads. Larger bodies (uploads) are streamed as before, and a body that is not
//! read is then a reason to close.

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

/// Bodies up to this size are read before the handler runs.
pub const SMALL_BODY: usize = 16 * 1024;

/// What the request says about its body.
enum Body {
    None,
    Small,
    Large,
}

fn body_of(req: &ServiceRequest) -> Body {
    let headers = req.headers();
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        return match len.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(0) => Body::None,
            Some(n) if n <= SMALL_BODY as u64 => Body::Small,
            // Too large, or unparseable (actix has refused those already).
            _ => Body::Large,
        };
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Chunked: read up to the bound, then hand over the rest as a stream.
        Body::Small
    } else {
        Body::None
    }
}

/// The middleware: see the module docs.
pub async fn read_small_bodies(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Body::Small = body_of(&req) {
        let mut payload = req.parts_mut().1.take();
        let mut buf = BytesMut::new();
        let rest: Option<Result<Bytes, PayloadError>> = loop {
            match payload.next().await {
                None => break None,
                Some(Ok(chunk)) if buf.len() + chunk.len() <= SMALL_BODY => {
                    buf.extend_from_slice(&chunk);
                }
                // Past the bound (chunked) or broken: the handler gets what was read,
                // then the rest of the stream as it comes, errors included.
                Some(other) => break Some(other),
            }
        };
        let read = buf.freeze();
        match rest {
            None => req.set_payload(Payload::from(read)),
            Some(next_item) => {
                let stream = futures_util::stream::iter([Ok(read), next_item]).chain(payload);
                req.set_payload(Payload::Stream {
                    payload: Box::pin(stream),
                });
            }
        }
    }
    next.call(req).await
}
