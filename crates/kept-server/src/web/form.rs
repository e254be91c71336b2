//! Form posts: reading a urlencoded form as its pairs in order, one field or every value of a
//! repeated one, and the extractor a page's form handlers take.

use crate::http::client_ip::ClientIp;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;

/// The first value of field `name`.
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Every value of field `name` (a repeated checkbox), in order.
pub fn fields<'a>(form: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    form.iter()
        .filter(move |(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The pairs of a form, or none when the body is not one.
pub fn form_or_empty(
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Vec<(String, String)> {
    form.map(|Form(f)| f).unwrap_or_default()
}

/// What a form post to a page carries: the state, the client's address, the headers and the
/// form (empty when the body is not one; the page's own checks then refuse it).
pub struct Posted<S> {
    pub state: S,
    pub ip: ClientIp,
    pub headers: HeaderMap,
    pub form: Vec<(String, String)>,
}

impl<S> std::fmt::Debug for Posted<S> {
    // The form holds what the customer typed (a phone number): never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Posted")
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

impl<S: Clone + Send + Sync + 'static> FromRequest<S> for Posted<S> {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &S) -> Result<Posted<S>, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Ok(ip) = ClientIp::from_request_parts(&mut parts, state).await;
        let headers = parts.headers.clone();
        let form =
            Form::<Vec<(String, String)>>::from_request(Request::from_parts(parts, body), state)
                .await;
        Ok(Posted {
            state: state.clone(),
            ip,
            headers,
            form: form_or_empty(form),
        })
    }
}
