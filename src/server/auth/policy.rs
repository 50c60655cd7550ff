//! Which key a route needs: decided from the route template the router matched (never the
//! raw path) and the method.
//!
//! Rules (README "Authentication and TLS"):
//! - `/api/health`, `/api/ready`: open (probes); `/metrics`: open unless
//!   `auth.protect_metrics`, then like the other collection-less read routes;
//! - collection routes (`/api/{col}...`): reads (GET, `_search`, `_count`, `_changes`) need
//!   `read`, writes need `write`, index management needs `admin`; a key limited to some
//!   collections gets 403 on the others;
//! - a collection's TTL (`/api/{col}/_ttl`): GET needs `read`, PUT and DELETE `admin`;
//! - collection-less routes (`/api/_collections`, `/api/_changes`, `/api/stats`,
//!   `/api/metrics`, `/api/openapi.json`, `/metrics`, `/api/_compact`, `/api/_backup`) concern every
//!   collection, so they need a key without a collection limit (`_collections` would list
//!   the others; compaction and backups cover them all);
//! - a template this table does not know (a route added later) needs `admin`: new routes
//!   are closed until someone classifies them;
//! - unmatched paths (404) need a valid key of any role, so that an anonymous client learns
//!   nothing about the routes.

use axum::http::Method;

use super::keys::Role;

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No key.
    Open,
    /// Any valid key (unmatched paths: they answer 404).
    AnyKey,
    /// A key with at least this role and no collection limit.
    Global(Role),
    /// A key with at least this role that may use the request's collection.
    Collection(Role),
}

/// The requirement of `method` on the matched route `template` (`None`: no route matched).
pub fn need(method: &Method, template: Option<&str>, protect_metrics: bool) -> Need {
    let reading = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let read_or_write = if reading { Role::Read } else { Role::Write };
    let Some(template) = template else {
        return Need::AnyKey;
    };
    match template {
        "/api/health" | "/api/ready" => Need::Open,
        "/metrics" if !protect_metrics => Need::Open,
        "/metrics" | "/api/stats" | "/api/metrics" | "/api/openapi.json" | "/api/_collections"
        | "/api/_changes" => Need::Global(read_or_write),
        "/api/_compact" | "/api/_backup" => Need::Global(Role::Admin),
        // A search is a read sent as POST.
        "/api/{col}/_search" | "/api/{col}/_count" | "/api/{col}/_changes" => {
            Need::Collection(Role::Read)
        }
        "/api/{col}" | "/api/{col}/_insertMany" | "/api/{col}/{id}" => {
            Need::Collection(read_or_write)
        }
        // A collection's expiry setting: readable like its documents, changed by admins.
        "/api/{col}/_ttl" if reading => Need::Collection(Role::Read),
        "/api/{col}/_ttl" => Need::Collection(Role::Admin),
        t if t.starts_with("/api/{col}/_index") => Need::Collection(Role::Admin),
        _ => Need::Global(Role::Admin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_templates_are_admin_only_and_probes_open() {
        let n = |m: Method, t: &str| need(&m, Some(t), false);
        assert_eq!(n(Method::GET, "/api/health"), Need::Open);
        assert_eq!(n(Method::GET, "/api/ready"), Need::Open);
        assert_eq!(n(Method::GET, "/metrics"), Need::Open);
        assert_eq!(
            need(&Method::GET, Some("/metrics"), true),
            Need::Global(Role::Read)
        );
        assert_eq!(
            n(Method::GET, "/api/_something_new"),
            Need::Global(Role::Admin)
        );
        assert_eq!(
            n(Method::POST, "/api/{col}/_indexes"),
            Need::Collection(Role::Admin)
        );
        assert_eq!(
            n(Method::POST, "/api/{col}/_search"),
            Need::Collection(Role::Read)
        );
        assert_eq!(
            n(Method::DELETE, "/api/{col}/{id}"),
            Need::Collection(Role::Write)
        );
        assert_eq!(need(&Method::GET, None, false), Need::AnyKey);
        // Routes of main not yet on this branch.
        assert_eq!(n(Method::GET, "/api/_backup"), Need::Global(Role::Admin));
        assert_eq!(n(Method::GET, "/api/_changes"), Need::Global(Role::Read));
        assert_eq!(
            n(Method::GET, "/api/{col}/_changes"),
            Need::Collection(Role::Read)
        );
        assert_eq!(
            n(Method::GET, "/api/{col}/_ttl"),
            Need::Collection(Role::Read)
        );
        assert_eq!(
            n(Method::PUT, "/api/{col}/_ttl"),
            Need::Collection(Role::Admin)
        );
    }
}
