//! Typed answers. A handler of [`ROUTES`](super::ROUTES) returns what it answers on success as a type —
//! [`Reply<T, STATUS>`] (a JSON body `T` and its status), [`Stored<T>`] (201, or 200 when the same thing was
//! stored already) or [`Html`] — and the OpenAPI document reads the status, the media type and the body's
//! schema from that type ([`Documents`], through [`success_of`] on the handler itself). So the document
//! cannot say one thing while the handler answers another: changing what a handler returns changes its
//! documented answer, and a body the schema cannot describe does not compile.
//!
//! The refusals (4xx, 5xx) are [`ApiError`]s, documented by the route table (`docs::errors`).

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, Responder};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;

use crate::http::error::ApiError;

/// A JSON answer: the body and the headers to add (e.g. the `RateLimit` headers of
/// [`Authorized::ok`](super::Authorized::ok)), answered with status `STATUS`.
#[derive(Debug)]
pub struct Reply<T, const STATUS: u16 = 200> {
    body: T,
    headers: Vec<(&'static str, String)>,
}

impl<T, const STATUS: u16> Reply<T, STATUS> {
    /// Checked at compile time for every status a `Reply` is made with: a success answer is a 2xx.
    const SUCCESS: () = assert!(STATUS >= 200 && STATUS < 300, "a Reply is a 2xx answer");

    /// `body`, without headers of its own.
    pub fn new(body: T) -> Self {
        let () = Self::SUCCESS;
        Self {
            body,
            headers: Vec::new(),
        }
    }

    /// Adds a header to the answer.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl<T: Serialize, const STATUS: u16> Responder for Reply<T, STATUS> {
    type Body = BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        let status = StatusCode::from_u16(STATUS).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = HttpResponse::build(status);
        for header in self.headers {
            resp.insert_header(header);
        }
        resp.json(self.body)
    }
}

/// The answer of a write that may find its result stored already (content-addressed uploads): 201 when it
/// stored it, 200 when the same thing was there (nothing changed). The same body either way.
#[derive(Debug)]
pub enum Stored<T> {
    Created(Reply<T, 201>),
    Existing(Reply<T, 200>),
}

impl<T: Serialize> Responder for Stored<T> {
    type Body = BoxBody;

    fn respond_to(self, req: &HttpRequest) -> HttpResponse {
        match self {
            Self::Created(r) => r.respond_to(req),
            Self::Existing(r) => r.respond_to(req),
        }
    }
}

/// An HTML page (`text/html; charset=utf-8`), e.g. `/api/docs`.
#[derive(Debug, Clone, Copy)]
pub struct Html(pub &'static str);

impl Responder for Html {
    type Body = BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(self.0)
    }
}

/// What a delete answers: what it deleted.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Deleted {
    /// The id, name or version deleted.
    pub deleted: String,
}

/// What a route answers on success, for the OpenAPI document.
#[derive(Debug, Clone)]
pub struct Success {
    /// The status code (`200`, `201`, `202`).
    pub status: u16,
    pub description: &'static str,
    /// `application/json`, or `text/html` for a page.
    pub media: &'static str,
    /// The body's schema (a `$ref` to `components/schemas` for a named type).
    pub schema: Schema,
    /// Another success status answered with the same body, and what it means ([`Stored`]: 200).
    pub also: Option<(u16, &'static str)>,
}

/// A handler's answer that the document can describe: its status, media type and body schema.
pub trait Documents {
    fn success(g: &mut SchemaGenerator) -> Success;
}

/// The usual description of a success status.
pub fn description(status: u16) -> &'static str {
    match status {
        201 => "Created",
        202 => "Accepted: queued, to be watched",
        _ => "OK",
    }
}

impl<T: JsonSchema, const STATUS: u16> Documents for Reply<T, STATUS> {
    fn success(g: &mut SchemaGenerator) -> Success {
        Success {
            status: STATUS,
            description: description(STATUS),
            media: "application/json",
            schema: g.subschema_for::<T>(),
            also: None,
        }
    }
}

impl<T: JsonSchema> Documents for Stored<T> {
    fn success(g: &mut SchemaGenerator) -> Success {
        Success {
            also: Some((
                200,
                "Stored already: the same content was there, nothing changed",
            )),
            ..Reply::<T, 201>::success(g)
        }
    }
}

impl Documents for Html {
    fn success(_: &mut SchemaGenerator) -> Success {
        Success {
            status: 200,
            description: "OK",
            media: "text/html",
            schema: schemars::json_schema!({"type": "string", "description": "an HTML page"}),
            also: None,
        }
    }
}

/// A refusal is an [`ApiError`] (documented apart); the success is `R`'s.
impl<R: Documents> Documents for Result<R, ApiError> {
    fn success(g: &mut SchemaGenerator) -> Success {
        R::success(g)
    }
}

/// What handler `_` answers on success, from its return type: `success_of(&tenants::list, g)`. The handler
/// is only named, never called; its arguments are whatever actix extracts for it.
pub fn success_of<F, Args>(_: &F, g: &mut SchemaGenerator) -> Success
where
    F: actix_web::Handler<Args>,
    Args: FromRequest,
    F::Output: Documents,
{
    F::Output::success(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody as _;
    use actix_web::test::TestRequest;

    #[derive(Serialize, JsonSchema)]
    struct Thing {
        /// A name.
        name: String,
    }

    async fn created() -> Result<Reply<Thing, 201>, ApiError> {
        Ok(Reply::new(Thing { name: "x".into() }).header("RateLimit", "limit=1"))
    }

    async fn page() -> Html {
        Html("<p>hi</p>")
    }

    #[test]
    fn a_reply_answers_its_status_headers_and_json_body() {
        let req = TestRequest::default().to_http_request();
        let resp = Reply::<_, 202>::new(serde_json::json!({"a": 1}))
            .header("X-Test", "yes")
            .respond_to(&req);
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        assert_eq!(
            resp.headers().get("X-Test").map(|v| v.as_bytes()),
            Some(&b"yes"[..])
        );
        assert_eq!(
            resp.headers().get("Content-Type").map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        let body = resp.into_body().try_into_bytes().ok();
        assert_eq!(body.as_deref(), Some(&br#"{"a":1}"#[..]));
    }

    #[test]
    fn the_success_comes_from_the_handler_type() {
        let mut g = schemars::generate::SchemaSettings::openapi3().into_generator();
        let s = success_of(&created, &mut g);
        assert_eq!((s.status, s.media, s.also), (201, "application/json", None));
        assert_eq!(
            s.schema.as_value()["$ref"],
            "#/components/schemas/Thing",
            "a named body is a reference"
        );
        assert_eq!(
            g.definitions()["Thing"]["properties"]["name"]["description"],
            "A name."
        );
        let s = success_of(&page, &mut g);
        assert_eq!((s.status, s.media), (200, "text/html"));
        let s = Stored::<Thing>::success(&mut g);
        assert_eq!((s.status, s.also.map(|a| a.0)), (201, Some(200)));
    }
}
