//! The client side: the HTTP calls that set up a run (users, tokens, conversations) and
//! WebSocket connections bound to several 127.0.0.x source addresses, so that one run
//! can open more sockets than one address has ephemeral ports.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use awc::ws;
use awc::{BoxedSocket, Client, Connector};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::server::Target;

/// Timeout of one setup HTTP request (user creation hashes a password: it can be slow).
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of a socket's TCP connect and upgrade.
const WS_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

pub type WsSink = SplitSink<actix_codec::Framed<BoxedSocket, ws::Codec>, ws::Message>;
pub type WsStream = SplitStream<actix_codec::Framed<BoxedSocket, ws::Codec>>;

/// An HTTP client whose connections come from `source`.
pub fn http_client(source: Option<IpAddr>, limit: usize) -> Client {
    let mut connector = Connector::new().limit(limit).timeout(WS_CONNECT_TIMEOUT);
    if let Some(ip) = source {
        connector = connector.local_address(ip);
    }
    Client::builder()
        .connector(connector)
        .timeout(HTTP_TIMEOUT)
        .max_http_version(awc::http::Version::HTTP_11)
        .finish()
}

/// The `i`-th of `n` loopback source addresses: 127.0.0.1, 127.0.0.2, …
pub fn source_addr(i: usize, n: usize) -> Option<IpAddr> {
    if n <= 1 {
        return None;
    }
    let k = (i % n) as u8 + 1;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, k)))
}

/// A user the run created, with an access token.
#[derive(Debug, Clone)]
pub struct BenchUser {
    pub id: i64,
    pub token: String,
}

/// POSTs JSON and returns the answer's JSON, or an error naming the call.
pub async fn post_json(
    client: &Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> Result<Value, String> {
    let mut req = client.post(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let mut resp = req
        .send_json(body)
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .body()
        .limit(1 << 20)
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "POST {url}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("POST {url}: bad JSON: {e}"))
}

/// Logs in and returns (user id, access token).
pub async fn login(
    client: &Client,
    base: &str,
    username: &str,
    password: &str,
) -> Result<BenchUser, String> {
    let v = post_json(
        client,
        &format!("{base}/api/auth/login"),
        None,
        &json!({"username": username, "password": password}),
    )
    .await?;
    let token = v["access_token"]
        .as_str()
        .ok_or("login: no access_token")?
        .to_string();
    let id = v["user"]["id"].as_i64().ok_or("login: no user.id")?;
    Ok(BenchUser { id, token })
}

/// Creates `n` users of `role` (names unique to this run) and logs each in.
pub async fn create_users(
    client: &Client,
    target: &Target,
    admin: &BenchUser,
    role: &str,
    n: usize,
) -> Result<Vec<BenchUser>, String> {
    let base = &target.urls[0];
    static BATCH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let batch = BATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let run = format!("{}x{batch}", run_tag());
    let password = "bench-user-password";
    let mut out = Vec::with_capacity(n);
    // A few at a time: each creation and login hashes a password on the server, and
    // Spotter refuses more than 4 logins in flight from one address.
    for chunk in (0..n).collect::<Vec<_>>().chunks(4) {
        let futs = chunk.iter().map(|i| {
            let username = format!("b{run}{}{i}", &role[..1]);
            async move {
                post_json(
                    client,
                    &format!("{base}/api/users"),
                    Some(&admin.token),
                    &json!({"username": username, "password": password, "role": role}),
                )
                .await?;
                login(client, base, &username, password).await
            }
        });
        for r in futures_util::future::join_all(futs).await {
            out.push(r?);
        }
    }
    Ok(out)
}

/// Creates `n` members through the API (as the admin) and answers their access tokens.
pub fn member_tokens(t: &Target, n: usize) -> Result<Vec<String>, String> {
    actix_web::rt::System::new().block_on(async {
        let http = http_client(None, 16);
        let admin = login(&http, &t.urls[0], "admin", &t.admin_password).await?;
        let users = create_users(&http, t, &admin, "member", n.max(1)).await?;
        Ok(users.into_iter().map(|u| u.token).collect())
    })
}

/// Creates `n` members and one trainer, and a direct conversation between the trainer and
/// each member; answers each member's access token and conversation id.
pub fn members_with_conversations(t: &Target, n: usize) -> Result<Vec<(String, i64)>, String> {
    actix_web::rt::System::new().block_on(async {
        let http = http_client(None, 16);
        let base = &t.urls[0];
        let admin = login(&http, base, "admin", &t.admin_password).await?;
        let trainer = create_users(&http, t, &admin, "trainer", 1).await?;
        let members = create_users(&http, t, &admin, "member", n.max(1)).await?;
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            let c = conversation(&http, base, &trainer[0], m.id).await?;
            out.push((m.token, c));
        }
        Ok(out)
    })
}

/// A short tag that keeps usernames of different runs apart on a shared server.
pub fn run_tag() -> String {
    use std::sync::OnceLock;
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "{:x}",
            (nanos as u64 ^ std::process::id() as u64) & 0xff_ffff
        )
    })
    .clone()
}

/// Get-or-create the direct conversation between the caller and `peer`.
pub async fn conversation(
    client: &Client,
    base: &str,
    user: &BenchUser,
    peer: i64,
) -> Result<i64, String> {
    let v = post_json(
        client,
        &format!("{base}/api/chat/conversations"),
        Some(&user.token),
        &json!({"peer_id": peer}),
    )
    .await?;
    v["id"]
        .as_i64()
        .or_else(|| v["conversation"]["id"].as_i64())
        .ok_or_else(|| format!("POST /api/chat/conversations: no id in {v}"))
}

/// Opens an authenticated socket (`/ws?token=`).
pub async fn ws_connect(
    client: &Client,
    base: &str,
    token: &str,
) -> Result<(WsSink, WsStream), String> {
    let url = format!("{}/ws?token={token}", base.replacen("http", "ws", 1));
    let (_, framed) = tokio::time::timeout(WS_CONNECT_TIMEOUT, client.ws(&url).connect())
        .await
        .map_err(|_| "socket connect timed out".to_string())?
        .map_err(|e| format!("socket connect: {e}"))?;
    Ok(framed.split())
}

/// Reads frames until a text frame whose `type` is `kind` (answering pings), or times out.
pub async fn wait_for(
    sink: &mut WsSink,
    stream: &mut WsStream,
    kind: &str,
    timeout: Duration,
) -> Result<Value, String> {
    use futures_util::SinkExt;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, stream.next())
            .await
            .map_err(|_| format!("no {kind} within {timeout:?}"))?;
        match frame {
            Some(Ok(ws::Frame::Text(b))) => {
                let v: Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
                if v["type"] == kind {
                    return Ok(v);
                }
                if v["type"] == "error" {
                    return Err(format!("waiting for {kind}: got {v}"));
                }
            }
            Some(Ok(ws::Frame::Ping(p))) => {
                let _ = sink.send(ws::Message::Pong(p)).await;
            }
            Some(Ok(ws::Frame::Close(reason))) => {
                return Err(format!("waiting for {kind}: closed {reason:?}"))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("waiting for {kind}: {e}")),
            None => return Err(format!("waiting for {kind}: socket ended")),
        }
    }
}
