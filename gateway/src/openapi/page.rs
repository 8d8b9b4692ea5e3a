//! The readable reference page (`GET /v1/docs`): HTML rendered from the OpenAPI document itself,
//! so the page says what the document says. Self-contained (no scripts, no CDN: nodes may run
//! without internet): operations grouped by tag, each with its method, path, summary, auth,
//! parameters, body and responses; then every named schema, which the operations link to.
//!
//! It reads the document as JSON and renders what it finds; anything missing is left out rather
//! than failing. Every text from the document is HTML-escaped.

use serde_json::Value;
use std::fmt::Write;

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2430}\
header,main{max-width:1000px;margin:0 auto;padding:0 24px}header{padding-top:24px}\
nav{background:#f4f6f8;padding:12px 24px;border-bottom:1px solid #dde2e7}nav a{margin-right:14px}\
h2{border-bottom:2px solid #dde2e7;padding-top:24px}h3{margin-bottom:4px}\
.op{border:1px solid #dde2e7;border-radius:6px;padding:4px 16px 12px;margin:16px 0}\
.method{display:inline-block;min-width:64px;text-align:center;border-radius:4px;color:#fff;font-size:13px;padding:2px 6px;margin-right:8px}\
.get{background:#2f7d4f}.post{background:#2a62b8}.patch{background:#a86b00}.delete{background:#b33a3a}.put{background:#6b4fa8}\
code{background:#f4f6f8;padding:1px 4px;border-radius:3px;font-size:13px}\
table{border-collapse:collapse;width:100%;margin:6px 0}td,th{border:1px solid #dde2e7;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f4f6f8;font-weight:600}.auth{color:#555}.req{color:#b33a3a}";

/// The page for `doc`, an OpenAPI 3.x document as JSON.
pub fn render(doc: &Value) -> String {
    let title = doc["info"]["title"].as_str().unwrap_or("API");
    let version = doc["info"]["version"].as_str().unwrap_or("");
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body>\
         <header><h1>{t} <small>{v}</small></h1>{d}<p>Machine-readable: <a href=\"openapi.json\"><code>openapi.json</code></a> \
         (OpenAPI {o}).</p></header>",
        t = esc(title),
        v = esc(version),
        d = markdown(doc["info"]["description"].as_str().unwrap_or("")),
        o = esc(doc["openapi"].as_str().unwrap_or("")),
    );
    let tags = tags(doc);
    out.push_str("<nav>");
    for (name, _) in &tags {
        let _ = write!(out, "<a href=\"#tag-{a}\">{n}</a>", a = anchor(name), n = esc(name));
    }
    out.push_str("<a href=\"#schemas\">schemas</a></nav><main>");
    for (name, description) in &tags {
        let _ = write!(out, "<section id=\"tag-{}\"><h2>{}</h2>{}", anchor(name), esc(name), markdown(description));
        for (method, path, op) in operations(doc) {
            if op["tags"][0].as_str().unwrap_or("") == name {
                operation(&mut out, doc, &method, &path, op);
            }
        }
        out.push_str("</section>");
    }
    out.push_str("<section id=\"schemas\"><h2>schemas</h2>");
    for (name, schema) in doc["components"]["schemas"].as_object().into_iter().flatten() {
        let _ = write!(out, "<div class=\"op\" id=\"schema-{}\"><h3>{}</h3>", anchor(name), esc(name));
        schema_body(&mut out, schema);
        out.push_str("</div>");
    }
    out.push_str("</section></main></body></html>");
    out
}

/// The declared tags in order, then any tag an operation uses without declaring it.
fn tags(doc: &Value) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| Some((t["name"].as_str()?.to_owned(), t["description"].as_str().unwrap_or("").to_owned())))
        .collect();
    for (_, _, op) in operations(doc) {
        let tag = op["tags"][0].as_str().unwrap_or("other");
        if !tags.iter().any(|(n, _)| n == tag) {
            tags.push((tag.to_owned(), String::new()));
        }
    }
    tags
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `(method, path, operation)` in the document's path order.
pub(crate) fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((method.to_owned(), path.clone(), op));
            }
        }
    }
    out
}

fn operation(out: &mut String, doc: &Value, method: &str, path: &str, op: &Value) {
    let id = op["operationId"].as_str().unwrap_or("");
    let _ = write!(
        out,
        "<article class=\"op\" id=\"op-{a}\"><h3><span class=\"method {m}\">{M}</span><code>{p}</code></h3><p><strong>{s}</strong></p>{d}",
        a = anchor(id),
        m = esc(method),
        M = esc(&method.to_uppercase()),
        p = esc(path),
        s = esc(op["summary"].as_str().unwrap_or("")),
        d = markdown(op["description"].as_str().unwrap_or("")),
    );
    let _ = write!(out, "<p class=\"auth\">Auth: {}</p>", auth(doc, op));
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        out.push_str("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>description</th></tr>");
        for p in params {
            let required = if p["required"].as_bool() == Some(true) { " <span class=\"req\">required</span>" } else { "" };
            let _ = write!(
                out,
                "<tr><td><code>{}</code>{required}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(p["name"].as_str().unwrap_or("")),
                esc(p["in"].as_str().unwrap_or("")),
                type_label(&p["schema"]),
                details(p["description"].as_str(), &p["schema"]),
            );
        }
        out.push_str("</table>");
    }
    if let Some(body) = op.get("requestBody") {
        let required = if body["required"].as_bool() == Some(true) { " (required)" } else { " (optional)" };
        let _ = write!(out, "<h4>Request body{required}</h4>");
        content(out, &body["content"]);
        for example in body["content"].as_object().into_iter().flatten().filter_map(|(_, c)| c.get("example")) {
            let _ = write!(out, "<p>Example: <code>{}</code></p>", esc(&example.to_string()));
        }
    }
    out.push_str("<h4>Responses</h4><table><tr><th>status</th><th>description</th><th>body</th></tr>");
    for (status, response) in op["responses"].as_object().into_iter().flatten() {
        let mut body = String::new();
        content(&mut body, &response["content"]);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(status),
            markdown_inline(response["description"].as_str().unwrap_or("")),
            body
        );
    }
    out.push_str("</table></article>");
}

/// The security requirements: any one of them, each a set of headers sent together.
fn auth(doc: &Value, op: &Value) -> String {
    let requirements = op["security"].as_array().filter(|r| !r.is_empty());
    let Some(requirements) = requirements else { return "none (public)".to_owned() };
    let schemes = &doc["components"]["securitySchemes"];
    let alternatives: Vec<String> = requirements
        .iter()
        .map(|r| {
            let names: Vec<String> = r
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, _)| {
                    let s = &schemes[name];
                    match (s["type"].as_str(), s["name"].as_str(), s["scheme"].as_str()) {
                        (Some("apiKey"), Some(header), _) => format!("<code>{}</code>", esc(header)),
                        (Some("http"), _, Some("bearer")) => "<code>Authorization: Bearer</code>".to_owned(),
                        _ => format!("<code>{}</code>", esc(name)),
                    }
                })
                .collect();
            names.join(" + ")
        })
        .collect();
    alternatives.join(" <em>or</em> ")
}

/// A request or response content map: its media types and schemas.
fn content(out: &mut String, content: &Value) {
    for (media, c) in content.as_object().into_iter().flatten() {
        let _ = write!(out, "<code>{}</code> {}", esc(media), type_label(&c["schema"]));
        if c["schema"].get("properties").is_some() {
            schema_body(out, &c["schema"]);
        }
    }
}

/// A schema's own description, then its fields (objects) or alternatives.
fn schema_body(out: &mut String, schema: &Value) {
    if let Some(d) = schema["description"].as_str() {
        out.push_str(&markdown(d));
    }
    if let Some(props) = schema["properties"].as_object() {
        let required: Vec<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        out.push_str("<table><tr><th>field</th><th>type</th><th>description</th></tr>");
        for (name, p) in props {
            let mark = if required.contains(&name.as_str()) { " <span class=\"req\">required</span>" } else { "" };
            let _ = write!(
                out,
                "<tr><td><code>{}</code>{mark}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                type_label(p),
                details(p["description"].as_str(), p)
            );
        }
        out.push_str("</table>");
    } else {
        let _ = write!(out, "<p>{} {}</p>", type_label(schema), details(None, schema));
    }
}

/// A field's description with its allowed values, pattern and example.
fn details(description: Option<&str>, schema: &Value) -> String {
    let mut out = markdown_inline(description.unwrap_or(""));
    let values = enum_values(schema);
    if !values.is_empty() {
        let _ = write!(out, " One of {}.", values.iter().map(|v| format!("<code>{}</code>", esc(v))).collect::<Vec<_>>().join(", "));
    }
    if let Some(p) = schema["pattern"].as_str() {
        let _ = write!(out, " Pattern <code>{}</code>.", esc(p));
    }
    let example = schema.get("example").or_else(|| schema["examples"].get(0));
    if let Some(e) = example {
        let _ = write!(out, " Example: <code>{}</code>.", esc(&e.to_string()));
    }
    out
}

fn enum_values(schema: &Value) -> Vec<String> {
    schema["enum"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect()
}

/// A short, linked description of a schema's type: `string`, `array of Order`, `integer | null`.
fn type_label(schema: &Value) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("<a href=\"#schema-{}\">{}</a>", anchor(name), esc(name));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(alternatives) = schema[key].as_array() {
            let joint = if key == "allOf" { " &amp; " } else { " | " };
            return alternatives.iter().map(type_label).collect::<Vec<_>>().join(joint);
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if types.is_empty() {
        return "any".to_owned();
    }
    types
        .iter()
        .map(|t| match *t {
            "array" => format!("array of {}", type_label(&schema["items"])),
            "integer" | "number" => match schema["format"].as_str() {
                Some(f) => format!("{t} ({})", esc(f)),
                None => (*t).to_owned(),
            },
            other => esc(other),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn anchor(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect()
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The little Markdown the descriptions use: paragraphs, `- ` lists, `code` and **bold**.
fn markdown(text: &str) -> String {
    let mut out = String::new();
    for block in text.split("\n\n").map(str::trim).filter(|b| !b.is_empty()) {
        if block.starts_with("- ") {
            out.push_str("<ul>");
            // A list item runs on until the next line that starts one.
            let mut items: Vec<String> = Vec::new();
            for line in block.lines() {
                match (line.strip_prefix("- "), items.last_mut()) {
                    (Some(item), _) => items.push(item.to_owned()),
                    (None, Some(last)) => {
                        last.push(' ');
                        last.push_str(line.trim());
                    }
                    (None, None) => items.push(line.to_owned()),
                }
            }
            for item in items {
                let _ = write!(out, "<li>{}</li>", markdown_inline(&item));
            }
            out.push_str("</ul>");
        } else {
            let _ = write!(out, "<p>{}</p>", markdown_inline(block));
        }
    }
    out
}

/// `code` and **bold** within one paragraph; everything else escaped.
fn markdown_inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", esc(part));
        } else {
            for (j, plain) in part.split("**").enumerate() {
                if j % 2 == 1 {
                    let _ = write!(out, "<strong>{}</strong>", esc(plain));
                } else {
                    out.push_str(&esc(plain));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_what_the_document_says() {
        let doc = json!({
            "openapi": "3.1.0",
            "info": {"title": "<script>x</script>", "version": "1"},
            "paths": {"/v1/a": {"get": {"tags": ["t"], "summary": "a & b", "operationId": "a",
                "responses": {"200": {"description": "`ok` **now**"}}}}},
        });
        let html = render(&doc);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(html.contains("a &amp; b"));
        assert!(html.contains("<code>ok</code> <strong>now</strong>"));
        assert!(html.contains("none (public)"));
    }

    #[test]
    fn an_empty_document_still_renders() {
        let html = render(&Value::Null);
        assert!(html.starts_with("<!doctype html>") && html.ends_with("</html>"));
    }

    #[test]
    fn markdown_lists_and_paragraphs() {
        let html = markdown("One.\n\n- a `x`\n  continued\n- b");
        assert_eq!(html, "<p>One.</p><ul><li>a <code>x</code> continued</li><li>b</li></ul>");
    }
}
