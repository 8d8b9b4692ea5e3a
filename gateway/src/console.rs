//! The operator console (`GET /console`): a static page (HTML, vanilla JS, CSS in
//! `gateway/console/`) compiled into the binary and served on the public surface. It holds no
//! secret and no data: the operator types the operator token into it and the page calls the
//! operator API (`/v1/operator/...`) with it, like any other client. So the page needs no
//! session of its own here, and the operator routes keep the one check they already have.
//!
//! No build step and nothing fetched from elsewhere: a production host may have no internet,
//! and a page that loads only its own three files can run under a Content-Security-Policy that
//! allows nothing but this origin (no inline script, no framing).

use crate::error::ApiError;
use crate::routes::resource;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};

const INDEX: &str = include_str!("../console/index.html");

/// The page's own files under `/console/`: name, content type, body.
const ASSETS: [(&str, &str, &str); 2] = [
    ("console.js", "text/javascript; charset=utf-8", include_str!("../console/console.js")),
    ("console.css", "text/css; charset=utf-8", include_str!("../console/console.css")),
];

/// Only this origin: scripts and styles from our own files, API calls to our own routes.
/// Inline SVG attributes are markup, not style, so the charts need no `unsafe-inline`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/console", |r| r.route(web::get().to(index))))
        .service(resource("/console/", |r| r.route(web::get().to(index))))
        .service(resource("/console/{asset}", |r| r.route(web::get().to(asset))));
}

async fn index() -> HttpResponse {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let name = req.match_info().get("asset").unwrap_or("");
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, content_type, body)| page(content_type, body))
        .ok_or_else(|| ApiError::not_found("not_found", "no such console file"))
}

/// A console file with the security headers every one of them carries. `no-store`: the page
/// changes with the binary, and an operator's browser should never serve a stale one.
fn page(content_type: &'static str, body: &'static str) -> HttpResponse {
    let mut response = HttpResponse::Ok().content_type(content_type).body(body);
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test as web_test, App};

    async fn get(path: &str) -> actix_web::dev::ServiceResponse {
        let app = web_test::init_service(App::new().configure(configure)).await;
        web_test::call_service(&app, web_test::TestRequest::get().uri(path).to_request()).await
    }

    fn header_of(res: &actix_web::dev::ServiceResponse, name: header::HeaderName) -> &str {
        res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    #[actix_web::test]
    async fn the_page_and_its_files_are_served_with_security_headers() {
        for (path, content_type) in [
            ("/console", "text/html"),
            ("/console/", "text/html"),
            ("/console/console.js", "text/javascript"),
            ("/console/console.css", "text/css"),
        ] {
            let res = get(path).await;
            assert_eq!(res.status(), 200, "{path}");
            assert!(header_of(&res, header::CONTENT_TYPE).starts_with(content_type), "{path}");
            assert_eq!(header_of(&res, header::X_FRAME_OPTIONS), "DENY", "{path}");
            assert_eq!(header_of(&res, header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
            let csp = header_of(&res, header::CONTENT_SECURITY_POLICY);
            assert!(csp.contains("script-src 'self';") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
            assert!(!csp.contains("unsafe-inline") && !csp.contains("http"), "{path}: {csp}");
        }
    }

    #[actix_web::test]
    async fn unknown_files_are_not_found() {
        for path in ["/console/nope.js", "/console/..%2Fsrc%2Flib.rs", "/console/index.html"] {
            assert_eq!(get(path).await.status(), 404, "{path}");
        }
    }

    /// The page loads only its own files: no inline script (the CSP would block it) and nothing
    /// from another origin (the host may have no internet).
    #[test]
    fn the_page_loads_nothing_inline_or_from_elsewhere() {
        assert!(INDEX.contains(r#"<script src="/console/console.js""#));
        assert_eq!(INDEX.matches("<script").count(), 1, "one script tag, no inline script");
        assert!(!INDEX.contains(" style=") && !INDEX.contains("<style"), "no inline style");
        for (_, _, body) in ASSETS.iter().chain([&("index", "", INDEX)]) {
            // The SVG namespace is a name, not a place anything is loaded from.
            let body = body.replace("\"http://www.w3.org/2000/svg\"", "");
            assert!(!body.contains("http://") && !body.contains("https://"), "no other origin");
        }
        let js = ASSETS[0].2;
        assert!(!js.contains("innerHTML") && !js.contains("eval("), "the script builds DOM nodes, never markup");
    }
}
