//! The web console at `/ui`: server-rendered HTML (maud escapes every value),
//! a little embedded JavaScript for live refresh and keyboard shortcuts, and
//! no front-end server. Four pages: **Now** (live feed, breakers, paging
//! budgets, backlogs, a per-minute chart), **Review** (approve or reject
//! drafts), **Run story** (timeline, conditions, attempts, audit hashes) and
//! **Autonomy** (levels, promotion report, kill switch). docs/console.md.
//!
//! It must never decide or act by itself: every change goes through the same
//! functions as the API (`review::approve`/`reject`, `autonomy::set`), with
//! the signed-in user as the caller, so the audit trail records the console's
//! reviewer exactly as it records an API caller. It reads through the store
//! and the API's own views (`storm::snapshot`, `autonomy::get`,
//! `reports::autonomy`).
//!
//! Identity (`identity.console`, `session`): the API's own (a bearer token
//! verified by the same authenticator, then an encrypted session cookie), or
//! a trusted reverse proxy's user header; forms carry a per-session CSRF token.

mod autonomy;
mod layout;
mod now;
mod review;
mod session;
mod story;

use axum::Router;
use axum::extract::{FromRef, Path};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::AppState;
use crate::problem::Problem;

pub use session::{ConsoleSettings, SESSION_COOKIE, settings};

/// How often the Now page refreshes its live part (browser side).
pub const REFRESH_MS: u64 = 5_000;
/// Runs the Now page's live feed lists.
pub const FEED_ROWS: i64 = 50;
/// Minutes the Now page's chart covers.
pub const CHART_MINUTES: i64 = 60;
/// Review items (drafted actions, and separately run-level items) listed.
pub const REVIEW_ITEMS_MAX: i64 = 200;
/// Delivery attempts listed per action on a run's story.
pub const STORY_ATTEMPTS_MAX: i64 = 50;
/// Audit records read for one run's story (more is reported as truncated).
pub const STORY_RECORDS_MAX: i64 = 500;
/// Longest run ID or correlation ID accepted in a console URL or search.
pub const ID_CHARS_MAX: usize = 128;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The console's routes (none with `identity.console.mode: off`).
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    if state.pipeline.console.is_off() {
        return Router::new();
    }
    let signed_in = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/now") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/now") }))
        .route("/ui/now", get(now::page))
        .route("/ui/now/live", get(now::live))
        .route("/ui/review", get(review::page))
        .route("/ui/review/{id}", post(review::decide))
        .route("/ui/runs", get(story::find))
        .route("/ui/runs/{run_id}", get(story::page))
        .route("/ui/autonomy", get(autonomy::page).post(autonomy::change))
        .route("/ui/logout", post(session::logout))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::guard,
        ));
    Router::new()
        .merge(signed_in)
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/assets/{name}", get(asset))
        .layer(axum::middleware::map_response(security_headers))
}

/// The session cookie's key, for the private cookie jar extractor.
impl FromRef<AppState> for axum_extra::extract::cookie::Key {
    fn from_ref(state: &AppState) -> Self {
        state.pipeline.console.key.clone()
    }
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// No page is framed, cached, or allowed a script or style from elsewhere
/// (inline script and style attributes are refused too).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A console error: an HTML page with the status, never internals.
#[derive(Debug)]
pub(crate) struct UiError {
    status: StatusCode,
    title: String,
    detail: String,
}

impl UiError {
    pub(crate) fn new(status: StatusCode, title: &str, detail: impl Into<String>) -> Self {
        UiError {
            status,
            title: title.to_owned(),
            detail: detail.into(),
        }
    }

    pub(crate) fn not_found(what: &str) -> Self {
        UiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("{what} not found"),
        )
    }

    pub(crate) fn forbidden(scope: tg_identity::Scope) -> Self {
        UiError::new(
            StatusCode::FORBIDDEN,
            "Not allowed",
            format!("this needs the {scope} scope, which your sign-in does not hold"),
        )
    }
}

impl From<Problem> for UiError {
    fn from(p: Problem) -> Self {
        UiError {
            status: StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            title: p.title,
            detail: p.detail,
        }
    }
}

impl From<tg_store::StoreError> for UiError {
    fn from(e: tg_store::StoreError) -> Self {
        Problem::internal("the store cannot be read", &e).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let body = layout::bare(
            &self.title,
            maud::html! {
                h1 { (self.title) }
                p { (self.detail) }
                p { a href="/ui/now" { "Back to the console" } }
            },
        );
        (self.status, axum::response::Html(body.into_string())).into_response()
    }
}
