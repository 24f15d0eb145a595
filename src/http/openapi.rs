//! `GET /api/openapi.json`: the OpenAPI document of the HTTP API, generated from the
//! handlers' own annotations and types (utoipa). What every route shares is added here in
//! one place: the bearer scheme, the contract's error responses (PROTOCOL §3), and the
//! static pages, whose handlers are closures.

use std::sync::OnceLock;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::openapi::path::{Operation, OperationBuilder, ParameterIn, PathItem};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HttpMethod, OpenApi as Document, Ref, ResponseBuilder, ResponsesBuilder,
};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::domain::chat::{ClientView, ConversationView};
use crate::domain::users::UserView;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/openapi.json", web::get().to(get_openapi));
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Spotter",
        description = "The realtime server of a gym: chat, presence, check-ins, attendance. \
                       The socket protocol is PROTOCOL §4; this document covers HTTP."
    ),
    paths(
        super::auth::login,
        super::auth::refresh,
        super::auth::logout,
        super::users::get_me,
        super::users::get_user,
        super::users::post_heartbeat,
        super::users::list_users,
        super::users::create_user,
        super::users::patch_user,
        super::users::get_presence_log,
        super::chat::list_conversations,
        super::chat::open_conversation,
        super::chat::get_history,
        super::chat::post_message,
        super::chat::post_read,
        super::chat::list_clients,
        super::chat::put_assignment,
        super::chat::delete_assignment,
        super::files::upload_file,
        super::files::get_file,
        super::checkins::post_checkin,
        super::checkins::post_checkout,
        super::checkins::list_checkins,
        super::checkins::get_stats,
        super::checkins::list_open,
        super::checkins::post_checkin_by_code,
        super::people::list_trainers,
        super::people::list_members,
        super::people::list_assigned,
        super::people::get_my_checkin_code,
        super::people::get_checkin_code,
        super::attendance::post_record,
        super::attendance::list_records,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::ws_plain,
        super::ws_conversation,
        get_openapi,
    ),
    components(schemas(crate::error::ErrorEnvelope, crate::error::ErrorBody)),
    modifiers(&Shared),
    tags(
        (name = "auth"), (name = "users"), (name = "chat"), (name = "files"),
        (name = "checkins"), (name = "attendance"), (name = "ops"), (name = "realtime"),
        (name = "pages"),
    )
)]
struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| match ApiDoc::openapi().to_json() {
        Ok(json) => json,
        Err(e) => {
            // Only a bug in the annotations gets here; the failure is logged once.
            log::error!("cannot serialize the OpenAPI document: {e}");
            String::from("{}")
        }
    })
}

/// The OpenAPI document of this HTTP API.
#[utoipa::path(get, path = "/api/openapi.json", tag = "ops",
    responses((status = 200, description = "this document", body = Object, content_type = "application/json")))]
async fn get_openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// `GET /api/users/all-users`.
#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
    pub counts: super::users::Counts,
}

/// `GET /api/chat/conversations`.
#[derive(Serialize, ToSchema)]
pub struct ConversationList {
    pub conversations: Vec<ConversationView>,
}

/// `GET /api/trainer/clients`.
#[derive(Serialize, ToSchema)]
pub struct ClientList {
    pub clients: Vec<ClientView>,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /readyz` when ready.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: String,
    /// `sqlite` or `postgres`
    pub database: String,
    /// With several instances (`SPOTTER_REDIS_URL`): `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// With several instances: this instance's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// With several instances: whether this instance runs the sweeper now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweeper_duty: Option<bool>,
}

/// `GET /readyz` when the database does not answer: the error body plus `status`.
#[derive(Serialize, ToSchema)]
pub struct NotReady {
    pub error: crate::error::ErrorBody,
    #[schema(example = "unavailable")]
    pub status: String,
}

/// The multipart form of `POST /api/files/upload`.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only: the handler streams the multipart body itself
pub struct Upload {
    /// The image.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

const ERROR_SCHEMA: &str = "ErrorResponse";

/// What every operation shares, added in one place.
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        add_pages(doc);
        for (path, item) in doc.paths.paths.iter_mut() {
            for op in operations(item) {
                add_errors(path, op);
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The contract's errors that follow from an operation's shape: a token (401), a body or
/// a query string (400, 413, 422), a path id (404), the database (500, 503).
fn add_errors(path: &str, op: &mut Operation) {
    let mut add = |status: &str, text: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(text)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(ERROR_SCHEMA)))
                            .build(),
                    )
                    .build()
                    .into()
            });
    };
    let api = path.starts_with("/api/");
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let body = op.request_body.is_some();
    let query = op
        .parameters
        .as_ref()
        .is_some_and(|ps| ps.iter().any(|p| p.parameter_in == ParameterIn::Query));
    if secured {
        add(
            "401",
            "`unauthorized`: a missing, bad, expired or revoked token",
        );
    }
    if body {
        add(
            "400",
            "`invalid_request`: the body is not JSON of the right shape",
        );
        add("413", "`too_large`: the body is over the limit");
        add("422", "`validation_failed`: a field is missing or wrong");
    }
    if query && api {
        add("400", "`invalid_request`: a bad query string");
        add("422", "`validation_failed`: a parameter is wrong");
    }
    if path.contains('{') {
        add("404", "`not_found`");
    }
    if api && path != "/api/openapi.json" {
        add("500", "`internal`: a bug; the body says nothing more");
        add("503", "`unavailable`: the database cannot be reached");
    }
}

/// The pages (served by closures, GET and HEAD) and the `/ws/chat` alias of `/ws`.
fn add_pages(doc: &mut Document) {
    let page = |summary: &str, with_404: bool| -> Operation {
        let mut responses = ResponsesBuilder::new().response(
            "200",
            ResponseBuilder::new().description(summary).content(
                "text/html",
                ContentBuilder::new().schema(Some(String::schema())).build(),
            ),
        );
        if with_404 {
            responses = responses.response(
                "404",
                ResponseBuilder::new().description("`not_found`").content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(ERROR_SCHEMA)))
                        .build(),
                ),
            );
        }
        OperationBuilder::new()
            .tag("pages")
            .summary(Some(summary))
            .responses(responses.build())
            .build()
    };
    let mut static_op = page("an asset of the admin panel or the chat client", true);
    static_op.parameters = Some(vec![utoipa::openapi::path::ParameterBuilder::new()
        .name("file")
        .parameter_in(ParameterIn::Path)
        .required(utoipa::openapi::Required::True)
        .schema(Some(String::schema()))
        .build()]);
    for (path, op) in [
        ("/", page("the landing page", false)),
        ("/admin", page("the admin panel", false)),
        ("/chat", page("the chat client", false)),
        ("/static/{file}", static_op),
    ] {
        let mut item = PathItem::new(HttpMethod::Get, op.clone());
        item.head = Some(op);
        doc.paths.paths.insert(path.to_string(), item);
    }
    if let Some(ws) = doc.paths.paths.get("/ws").cloned() {
        doc.paths.paths.insert("/ws/chat".to_string(), ws);
    }
}

/// `String::schema()` without naming the trait at every use.
trait Schema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>;
}

impl Schema for String {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .into()
    }
}

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod tests;
