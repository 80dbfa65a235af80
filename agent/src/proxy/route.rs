//! Which Gemini API call a request path names, pure. Paths are
//! `[/t/{task}]/{v1beta|v1}/models/{model}:{method}` — `run` puts the task prefix into the
//! CLI's base URL, interactive users have none.

use gemfleet_protocol::{ModelName, NameError, RequestType, TaskId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCall {
    pub task: Option<TaskId>,
    pub version: String,
    pub model: ModelName,
    pub request_type: RequestType,
}

impl ApiCall {
    pub fn method(&self) -> &'static str {
        match self.request_type {
            RequestType::Generate => "generateContent",
            RequestType::Stream => "streamGenerateContent",
            RequestType::CountTokens => "countTokens",
        }
    }
    /// The upstream path (without query).
    pub fn upstream_path(&self) -> String {
        format!("/{}/models/{}:{}", self.version, self.model, self.method())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "not a Gemini API path this proxy serves: {0:?} (expected /v1beta/models/MODEL:generateContent, :streamGenerateContent or :countTokens)"
    )]
    NotFound(String),
    #[error("bad task id in the path: {0}")]
    BadTask(NameError),
    #[error("bad model name in the path: {0}")]
    BadModel(NameError),
}

pub fn parse(path: &str) -> Result<ApiCall, RouteError> {
    let not_found = || RouteError::NotFound(path.chars().take(200).collect());
    let (task, rest) = match path.strip_prefix("/t/") {
        Some(r) => {
            let (t, rest) = r.split_once('/').ok_or_else(not_found)?;
            (Some(TaskId::parse(t).map_err(RouteError::BadTask)?), rest)
        }
        None => (None, path.strip_prefix('/').ok_or_else(not_found)?),
    };
    let (version, rest) = rest.split_once('/').ok_or_else(not_found)?;
    if version != "v1beta" && version != "v1" {
        return Err(not_found());
    }
    let rest = rest.strip_prefix("models/").ok_or_else(not_found)?;
    let (model, method) = rest.rsplit_once(':').ok_or_else(not_found)?;
    let request_type = match method {
        "generateContent" => RequestType::Generate,
        "streamGenerateContent" => RequestType::Stream,
        "countTokens" => RequestType::CountTokens,
        _ => return Err(not_found()),
    };
    let model = ModelName::parse(model).map_err(RouteError::BadModel)?;
    Ok(ApiCall {
        task,
        version: version.to_string(),
        model,
        request_type,
    })
}

/// The query string to forward: everything but a `key` parameter (keys travel only in the
/// header the proxy sets).
pub fn forward_query(query: Option<&str>) -> String {
    let Some(q) = query else { return String::new() };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some("key"))
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_and_without_a_task_prefix() {
        let c = parse("/t/box-2026-12-03/v1beta/models/gemini-2.5-flash:streamGenerateContent")
            .unwrap();
        assert_eq!(c.task.unwrap().as_str(), "box-2026-12-03");
        assert_eq!(c.model.as_str(), "gemini-2.5-flash");
        assert_eq!(c.request_type, RequestType::Stream);
        let c = parse("/v1/models/gemini-2.5-pro:countTokens").unwrap();
        assert!(c.task.is_none());
        assert_eq!(c.upstream_path(), "/v1/models/gemini-2.5-pro:countTokens");
        assert_eq!(
            parse("/v1beta/models/m:generateContent")
                .unwrap()
                .request_type,
            RequestType::Generate
        );
    }

    #[test]
    fn hostile_or_unknown_paths_are_refused() {
        assert!(matches!(
            parse("/v2/models/m:generateContent"),
            Err(RouteError::NotFound(_))
        ));
        assert!(matches!(
            parse("/v1beta/models/m:embedContent"),
            Err(RouteError::NotFound(_))
        ));
        assert!(matches!(
            parse("/t/a+b/v1beta/models/m:generateContent"),
            Err(RouteError::BadTask(_))
        ));
        assert!(matches!(
            parse("/v1beta/models/../x:generateContent"),
            Err(RouteError::BadModel(_))
        ));
        assert!(parse("").is_err());
        assert!(parse("/t/").is_err());
    }

    #[test]
    fn the_key_parameter_is_dropped_from_the_query() {
        assert_eq!(forward_query(Some("alt=sse&key=SECRET")), "?alt=sse");
        assert_eq!(forward_query(Some("key=SECRET")), "");
        assert_eq!(forward_query(None), "");
    }

    proptest::proptest! {
        #[test]
        fn any_path_parses_or_is_refused_without_panic(path in "\\PC{0,120}") {
            if let Ok(c) = parse(&path) {
                // Whatever parsed rebuilds an upstream path with no task prefix or key.
                let prefix = format!("/{}/models/", c.version);
                proptest::prop_assert!(c.upstream_path().starts_with(&prefix));
            }
        }

        #[test]
        fn the_forwarded_query_never_holds_a_key(q in "[a-z=&]{0,40}", k in "[A-Za-z0-9]{1,20}") {
            let query = format!("{q}&key={k}&{q}");
            let out = forward_query(Some(&query));
            let names: Vec<&str> = out.trim_start_matches('?').split('&').map(|kv| kv.split('=').next().unwrap_or("")).collect();
            proptest::prop_assert!(!names.contains(&"key"));
        }
    }
}
