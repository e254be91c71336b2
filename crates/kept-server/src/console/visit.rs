//! What every console handler starts with, in one place: the page frame, and the extractors
//! that let a handler run only for a signed-in operator whose role may use the route.
//!
//! The route's guard comes from the router (`routes::table` puts it on each route), never from
//! the handler, so the role matrix the tests walk is the one requests meet. `Visit` is a page
//! read (`GET`): a session, and a role the page allows. `Act` is a form post: the same, plus a
//! post from the console's own pages (the browser's site headers) carrying the session's CSRF
//! token. Either refuses with the page to show instead: sign in (saying the session ended when
//! a cookie came), or "not for your role".

use crate::console::audit::Actor;
use crate::console::routes::Guard;
use crate::console::session::{self, SignedIn};
use crate::console::texts::{self, ConsoleTexts};
use crate::console::{Page, secure};
use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::web::form::{Posted, field};
use crate::web::frame::{Chrome, chrome, html, redirect};
use crate::web::{cookie, i18n};
use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// A link of the console's navigation.
#[derive(Debug, Clone)]
pub struct Nav {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// What every console page's frame shows.
#[derive(Debug, Clone)]
pub struct Frame {
    pub c: Chrome,
    pub t: &'static ConsoleTexts,
    /// Who is signed in (`email (role)`), if anyone.
    pub who: Option<String>,
    pub csrf: String,
    pub nav: Vec<Nav>,
    /// The page the language form reloads.
    pub path: String,
}

impl Frame {
    /// The frame with the language form reloading `path`: a page whose address names what it
    /// shows (`/admin/requests/7`) under its route's place in the navigation.
    pub fn reloading(mut self, path: String) -> Frame {
        self.path = path;
        self
    }
}

/// The frame of the page at `path`, in the language asked for (`lang`, else the cookie, else
/// the browser's), with the navigation `signed`'s role may follow.
pub fn frame(
    state: &AppState,
    lang: Option<&str>,
    headers: &HeaderMap,
    path: &'static str,
    signed: Option<&SignedIn>,
) -> Frame {
    let pref = i18n::language(&state.manifest.organisation.locales, lang, headers);
    let t = texts::for_code(pref.code);
    let nav = signed
        .map(|s| {
            Page::ALL
                .into_iter()
                .filter(|p| p.allows(s.operator.role))
                .map(|p| Nav {
                    href: p.path(),
                    label: p.label(t),
                    current: p.path() == path,
                })
                .collect()
        })
        .unwrap_or_default();
    Frame {
        c: chrome(&state.manifest.organisation, pref, path),
        t,
        who: signed.map(|s| format!("{} ({})", s.operator.email, s.operator.role.as_str())),
        csrf: signed.map(|s| s.csrf.clone()).unwrap_or_default(),
        nav,
        path: path.to_owned(),
    }
}

/// A page that only says why it cannot be shown.
#[derive(Template)]
#[template(
    source = "{% extends \"console/base.html\" %}{% block content %}<h1>{{ f.t.console }}</h1><p class=\"alert\" role=\"alert\">{{ message }}</p>{% endblock %}",
    ext = "html"
)]
struct RefusedPage {
    f: Frame,
    message: &'static str,
}

/// The page saying `message` with `status`.
pub fn refused(f: Frame, status: StatusCode, message: &'static str) -> Response {
    html(status, RefusedPage { f, message }.render())
}

/// Adds the language cookie when the page was asked for in a language.
pub fn with_lang(
    mut response: Response,
    state: &AppState,
    lang: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    if let Some(code) = lang.filter(|l| crate::web::texts::ALL.iter().any(|t| t.code == *l)) {
        let secure = secure(state.prefcenter.base_url(), headers);
        if let Ok(v) = HeaderValue::from_str(&i18n::lang_cookie(session::PATH, code, secure)) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

#[derive(Debug, Default, Deserialize)]
struct LangQuery {
    lang: Option<String>,
}

/// The page a route is guarded by; a route without a guard is refused (it cannot happen through
/// `routes::table`, and must not pass if it ever did).
fn page_of(parts: &Parts, state: &AppState) -> Result<Page, Box<Response>> {
    match parts.extensions.get::<Guard>() {
        Some(Guard::Page(page)) => Ok(*page),
        _ => Err(Box::new(refused(
            frame(state, None, &parts.headers, "/admin", None),
            StatusCode::FORBIDDEN,
            texts::for_code("en").forbidden,
        ))),
    }
}

/// The signed-in operator, or the answer to give instead: to sign in (with "your session
/// ended" when a cookie came), or refused when their role may not open `page`.
async fn require(
    state: &AppState,
    headers: &HeaderMap,
    lang: Option<&str>,
    page: Page,
) -> Result<SignedIn, Response> {
    let keys = state
        .console
        .keys(state.store.as_ref())
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let signed = session::signed_in(
        state.store.as_ref(),
        keys,
        state.console.lifetimes,
        headers,
        state.now(),
    )
    .await
    .map_err(|e| ApiError::from(e).into_response())?;
    let Some(signed) = signed else {
        let ended = cookie::read(headers, session::COOKIE).is_some_and(|c| !c.is_empty());
        let to = if ended {
            "/admin/sign-in?reason=session"
        } else {
            "/admin/sign-in"
        };
        return Err(redirect(to, &[]));
    };
    if !page.allows(signed.operator.role) {
        let f = frame(state, lang, headers, page.path(), Some(&signed));
        let message = f.t.forbidden;
        return Err(refused(f, StatusCode::FORBIDDEN, message));
    }
    Ok(signed)
}

/// A signed-in operator reading a page their role may open.
#[derive(Debug)]
pub struct Visit {
    pub state: AppState,
    pub headers: HeaderMap,
    pub signed: SignedIn,
    pub page: Page,
    /// The language the page was asked for in (`?lang=`), if any.
    pub lang: Option<String>,
}

impl FromRequestParts<AppState> for Visit {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Visit, Response> {
        let page = page_of(parts, state).map_err(|r| *r)?;
        let lang = Query::<LangQuery>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|Query(q)| q.lang);
        let signed = require(state, &parts.headers, lang.as_deref(), page).await?;
        Ok(Visit {
            state: state.clone(),
            headers: parts.headers.clone(),
            signed,
            page,
            lang,
        })
    }
}

impl Visit {
    /// The frame of the route's page.
    pub fn frame(&self) -> Frame {
        self.frame_at(self.page.path())
    }

    /// The frame of a page under the route's (`/admin/data-map/record`).
    pub fn frame_at(&self, path: &'static str) -> Frame {
        frame(
            &self.state,
            self.lang.as_deref(),
            &self.headers,
            path,
            Some(&self.signed),
        )
    }

    /// The rendered page with `status`, keeping the language asked for.
    pub fn show(&self, status: StatusCode, page: askama::Result<String>) -> Response {
        with_lang(
            html(status, page),
            &self.state,
            self.lang.as_deref(),
            &self.headers,
        )
    }

    /// Who the audit log names.
    pub fn actor(&self) -> Actor {
        actor(&self.signed)
    }
}

/// A signed-in operator's form post from the console's own pages, with the session's CSRF
/// token, to a route their role may use.
#[derive(Debug)]
pub struct Act {
    pub state: AppState,
    pub headers: HeaderMap,
    pub ip: ClientIp,
    pub signed: SignedIn,
    pub page: Page,
    pub form: Vec<(String, String)>,
}

impl FromRequest<AppState> for Act {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Act, Response> {
        let (parts, body) = req.into_parts();
        let page = page_of(&parts, state).map_err(|r| *r)?;
        let Ok(Posted {
            ip, headers, form, ..
        }) = Posted::from_request(Request::from_parts(parts, body), state).await;
        let signed = require(state, &headers, None, page).await?;
        let keys = state
            .console
            .keys(state.store.as_ref())
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
        if crate::web::session::cross_site(state.prefcenter.base_url(), &headers)
            || !keys.csrf_matches(&signed.session_id, field(&form, "csrf").unwrap_or_default())
        {
            let f = frame(state, None, &headers, page.path(), Some(&signed));
            let message = f.t.cross_site;
            return Err(refused(f, StatusCode::FORBIDDEN, message));
        }
        Ok(Act {
            state: state.clone(),
            headers,
            ip,
            signed,
            page,
            form,
        })
    }
}

impl Act {
    /// The first value of field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        field(&self.form, name)
    }

    /// The frame of the route's page.
    pub fn frame(&self) -> Frame {
        frame(
            &self.state,
            None,
            &self.headers,
            self.page.path(),
            Some(&self.signed),
        )
    }

    /// Who the audit log names.
    pub fn actor(&self) -> Actor {
        actor(&self.signed)
    }
}

fn actor(signed: &SignedIn) -> Actor {
    Actor {
        operator: Some(signed.operator.id),
        name: signed.operator.email.clone(),
    }
}
