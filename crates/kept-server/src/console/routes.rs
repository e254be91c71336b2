//! The console's routes, each with the guard its handlers meet: the table is the router, and
//! the role matrix (`matrix`) the tests walk and the docs list is read from it.

use crate::console::Page;
use crate::console::{pages, requests, subjects};
use crate::state::AppState;
use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::MethodRouter;

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Anyone: the sign-in form and its post, which make sessions.
    Open,
    /// A signed-in operator whose role may open the page (`Page::roles`).
    Page(Page),
}

/// One route: its path, its guard, and its handlers by method.
pub struct Entry {
    pub path: &'static str,
    pub guard: Guard,
    pub methods: Vec<Method>,
    router: MethodRouter<AppState>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("path", &self.path)
            .field("guard", &self.guard)
            .field("methods", &self.methods)
            .finish_non_exhaustive()
    }
}

impl Entry {
    fn new(path: &'static str, guard: Guard) -> Entry {
        Entry {
            path,
            guard,
            methods: Vec::new(),
            router: MethodRouter::new(),
        }
    }

    fn get<H: Handler<T, AppState>, T: 'static>(mut self, handler: H) -> Entry {
        self.methods.push(Method::GET);
        self.router = self.router.get(handler);
        self
    }

    fn post<H: Handler<T, AppState>, T: 'static>(mut self, handler: H) -> Entry {
        self.methods.push(Method::POST);
        self.router = self.router.post(handler);
        self
    }
}

fn open(path: &'static str) -> Entry {
    Entry::new(path, Guard::Open)
}

fn page(page: Page, path: &'static str) -> Entry {
    Entry::new(path, Guard::Page(page))
}

/// Every console route.
pub fn table() -> Vec<Entry> {
    use Page::{
        Audit, Campaigns, DataMap, Keys, Ledger, Operators, Overview, Requests, Subjects, Webhooks,
    };
    vec![
        open("/admin/sign-in")
            .get(pages::sign_in_form)
            .post(pages::sign_in),
        // Every role may sign out.
        page(Overview, "/admin/sign-out").post(pages::sign_out),
        page(Overview, "/admin").get(pages::overview),
        page(DataMap, "/admin/data-map").get(pages::data_map),
        page(DataMap, "/admin/data-map/record").get(pages::record),
        page(DataMap, "/admin/data-map/record.csv").get(pages::record_csv),
        page(DataMap, "/admin/data-map/notices/{id}").get(pages::notice),
        page(Campaigns, "/admin/campaigns").get(pages::campaigns),
        page(Campaigns, "/admin/campaigns/export").post(pages::export_campaign),
        page(Requests, "/admin/requests").get(requests::queue),
        page(Requests, "/admin/requests/{id}").get(requests::show),
        page(Requests, "/admin/requests/{id}/verify").post(requests::verify),
        page(Requests, "/admin/requests/{id}/start").post(requests::start),
        page(Requests, "/admin/requests/{id}/complete").post(requests::complete),
        page(Requests, "/admin/requests/{id}/extend").post(requests::extend),
        page(Requests, "/admin/requests/{id}/reject").post(requests::reject),
        page(Requests, "/admin/requests/{id}/handled").post(requests::handled),
        page(Requests, "/admin/requests/{id}/erase").post(requests::erase),
        page(Requests, "/admin/requests/{id}/export").post(requests::export),
        page(Subjects, "/admin/subjects").get(subjects::search),
        page(Subjects, "/admin/subjects/{id}").get(subjects::view),
        page(Subjects, "/admin/subjects/{id}/link").post(subjects::mint_link),
        page(Subjects, "/admin/subjects/{id}/requests").post(subjects::start_request),
        page(Subjects, "/admin/subjects/{id}/merges/{merge}/undo").post(subjects::undo_merge),
        page(Ledger, "/admin/ledger").get(pages::ledger),
        page(Ledger, "/admin/ledger/verify").post(pages::verify_ledger),
        page(Ledger, "/admin/ledger/receipt").post(pages::check_receipt),
        page(Keys, "/admin/keys")
            .get(pages::keys)
            .post(pages::create_key),
        page(Keys, "/admin/keys/{id}/revoke").post(pages::revoke_key),
        page(Webhooks, "/admin/webhooks").get(pages::webhooks),
        page(Webhooks, "/admin/webhooks/dead/{id}/retry").post(pages::retry_dead_letter),
        page(Audit, "/admin/audit").get(pages::audit),
        page(Operators, "/admin/operators").get(pages::operators),
    ]
}

/// The console's routes, each carrying its guard for the handlers' extractors to read.
pub fn routes() -> Router<AppState> {
    table().into_iter().fold(Router::new(), |router, e| {
        router.route(e.path, e.router.route_layer(axum::Extension(e.guard)))
    })
}

/// The role matrix: every method and path of the console with its guard, as the router has
/// them.
pub fn matrix() -> Vec<(Method, &'static str, Guard)> {
    table()
        .into_iter()
        .flat_map(|e| {
            let (path, guard) = (e.path, e.guard);
            e.methods.into_iter().map(move |m| (m, path, guard))
        })
        .collect()
}
