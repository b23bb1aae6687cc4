//! Swagger UI, from the `swagger-ui-redist` crate (Swagger UI 5, which reads no configuration
//! from the query string unless told to). The page and its start-up script are ours: the
//! document URL is fixed here, so a link like `?url=https://evil.example/x.json` or
//! `?configUrl=` cannot make the page on this origin load a foreign document, and the script
//! is a file rather than inline so the Content-Security-Policy can forbid inline scripts.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use swagger_ui_redist::{SwaggerUi, SwaggerUiStaticFile};

use super::openapi::{SPEC_V2_PATH, SWAGGER_PATH};
use super::Problem;

/// The page, served at `SWAGGER_PATH` itself (DESIGN: `GET /swagger` is 200) and below it, so
/// its files are named by absolute paths, which resolve the same from either.
fn index_page() -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
    <meta charset="UTF-8">
    <title>wallet API</title>
    <link rel="stylesheet" type="text/css" href="{SWAGGER_PATH}/swagger-ui.css" />
    <link rel="icon" type="image/png" href="{SWAGGER_PATH}/favicon-32x32.png" sizes="32x32" />
    <link rel="icon" type="image/png" href="{SWAGGER_PATH}/favicon-16x16.png" sizes="16x16" />
</head>
<body>
<div id="swagger-ui"></div>
<script src="{SWAGGER_PATH}/swagger-ui-bundle.js" charset="UTF-8"></script>
<script src="{SWAGGER_PATH}/swagger-initializer.js" charset="UTF-8"></script>
</body>
</html>
"#
    )
}

/// `queryConfigEnabled` is off (the default of this release, stated so it stays off), the
/// base layout has no box to type another document's URL into, and no validator is called.
fn initializer() -> String {
    format!(
        r##"window.onload = function () {{
  window.ui = SwaggerUIBundle({{
    url: "{SPEC_V2_PATH}",
    dom_id: "#swagger-ui",
    queryConfigEnabled: false,
    layout: "BaseLayout",
    validatorUrl: null,
    deepLinking: false
  }});
}};
"##
    )
}

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(SWAGGER_PATH, web::get().to(index))
        .route(&format!("{SWAGGER_PATH}/"), web::get().to(index))
        .route(&format!("{SWAGGER_PATH}/index.html"), web::get().to(index))
        .route(
            &format!("{SWAGGER_PATH}/swagger-initializer.js"),
            web::get().to(script),
        )
        .route(&format!("{SWAGGER_PATH}/{{file}}"), web::get().to(file));
}

/// The same page whatever the query string says.
async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(index_page())
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(initializer())
}

async fn file(request: HttpRequest) -> HttpResponse {
    let name = request.match_info().get("file").unwrap_or_default();
    let found = SwaggerUi::static_files()
        .iter()
        .find(|(file, _)| file.file_name() == name);
    match found {
        Some((file, bytes)) => HttpResponse::Ok()
            .content_type(content_type(*file))
            .body(*bytes),
        None => Problem::new(
            StatusCode::NOT_FOUND,
            "ROUTE_NOT_FOUND",
            "Not found",
            "no such Swagger UI file",
        )
        .error_response(),
    }
}

fn content_type(file: SwaggerUiStaticFile) -> &'static str {
    match file {
        SwaggerUiStaticFile::Css | SwaggerUiStaticFile::IndexCss => "text/css; charset=utf-8",
        SwaggerUiStaticFile::Js | SwaggerUiStaticFile::StandalonePresetJs => {
            "text/javascript; charset=utf-8"
        }
        _ => "image/png",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files_and_our_document() {
        let page = index_page();
        assert!(!page.contains("<script>"), "no inline script");
        for name in [
            "swagger-ui.css",
            "swagger-ui-bundle.js",
            "favicon-16x16.png",
        ] {
            assert!(
                SwaggerUi::static_files()
                    .iter()
                    .any(|(file, _)| file.file_name() == name),
                "{name} is bundled"
            );
            assert!(
                page.contains(&format!("\"/swagger/{name}\"")),
                "{name} by its path"
            );
        }
        let script = initializer();
        assert!(script.contains(r#"url: "/openapi/v2.json""#));
        assert!(script.contains("queryConfigEnabled: false"));
    }
}
