//! WebSocket handshakes. actix-http hands every request that asks to upgrade to a
//! WebSocket here, with the connection; the request is answered by the same app as any
//! other (routes, middleware, errors), and a `101` that carries a
//! [`Takeover`](crate::realtime::wire::Takeover) gets the connection: its response head is
//! written, and the socket runs on the bare TCP stream (`realtime::wire`) instead of
//! through the HTTP/1 dispatcher and its two buffers. Any other answer is written whole and
//! the connection closed.

use std::rc::Rc;

use actix_codec::Framed;
use actix_http::body::{self, BodySize, MessageBody};
use actix_http::h1::{Codec, Message};
use actix_http::{ConnectionType, Request, Response, StatusCode};
use actix_web::dev::{fn_factory, fn_service, Service, ServiceFactory, ServiceResponse};
use actix_web::rt::net::TcpStream;
use futures_util::SinkExt;

use crate::realtime::wire::Takeover;

/// The upgrade service of one worker: `app` builds that worker's copy of the app.
pub fn service<F, T, B>(
    app: F,
) -> impl ServiceFactory<
    (Request, Framed<TcpStream, Codec>),
    Config = (),
    Response = (),
    Error = actix_web::Error,
    InitError = (),
>
where
    F: Fn() -> T + Clone + 'static,
    T: ServiceFactory<
            Request,
            Config = actix_web::dev::AppConfig,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
        > + 'static,
    T::InitError: std::fmt::Debug,
    B: MessageBody + 'static,
{
    fn_factory(move || {
        let factory = app();
        async move {
            let app = factory
                .new_service(actix_web::dev::AppConfig::default())
                .await
                .map_err(|e| log::error!("the upgrade service's app did not start: {e:?}"))?;
            let app = Rc::new(app);
            Ok(fn_service(move |(req, framed)| {
                answer(app.clone(), req, framed)
            }))
        }
    })
}

/// Answers one upgrade request on its connection.
async fn answer<S, B>(
    app: Rc<S>,
    req: Request,
    mut framed: Framed<TcpStream, Codec>,
) -> Result<(), actix_web::Error>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let res: Response<body::BoxBody> = match app.call(req).await {
        Ok(res) => Response::from(res.into_parts().1).map_into_boxed_body(),
        Err(e) => e.as_response_error().error_response().into(),
    };
    let (mut head, body) = res.into_parts();
    let takeover = head.extensions_mut().remove::<Takeover>();
    match takeover {
        Some(takeover) if head.status() == StatusCode::SWITCHING_PROTOCOLS => {
            framed
                .send(Message::Item((head, BodySize::None)))
                .await
                .map_err(actix_web::error::ErrorInternalServerError)?;
            let parts = framed.into_parts();
            // A task of its own, on this worker: the connection's task (the dispatcher,
            // 2.8 KiB) ends here instead of living as long as the socket. The shutdown
            // drain waits for these (`realtime::wire::live`).
            actix_web::rt::spawn(takeover.run(parts.io, parts.read_buf.freeze()));
        }
        _ => {
            let bytes = body::to_bytes(body)
                .await
                .map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string()))?;
            head.head_mut().set_connection_type(ConnectionType::Close);
            let size = BodySize::Sized(bytes.len() as u64);
            framed
                .send(Message::Item((head, size)))
                .await
                .map_err(actix_web::error::ErrorInternalServerError)?;
            if !bytes.is_empty() {
                framed
                    .send(Message::Chunk(Some(bytes)))
                    .await
                    .map_err(actix_web::error::ErrorInternalServerError)?;
            }
            framed
                .send(Message::Chunk(None))
                .await
                .map_err(actix_web::error::ErrorInternalServerError)?;
        }
    }
    Ok(())
}
