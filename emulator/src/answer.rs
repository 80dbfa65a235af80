//! What the emulated model says: deterministic text derived from the request, valid JSON for
//! the requested schema when JSON output is asked for, or a scripted reply. Pure.

use serde_json::{Map, Value, json};

/// The content of an answer, before it is framed as a response.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Text(String),
    FunctionCall { name: String, args: Value },
}

impl Reply {
    /// Characters the output-token rule counts.
    pub fn chars(&self) -> u64 {
        match self {
            Reply::Text(t) => t.chars().count() as u64,
            Reply::FunctionCall { name, args } => {
                json!({"functionCall": {"name": name, "args": args}})
                    .to_string()
                    .chars()
                    .count() as u64
            }
        }
    }
}

/// The default answer: JSON satisfying the schema when the request asks for JSON output,
/// otherwise text that depends only on the model and the request's last content.
pub fn default_reply(model: &str, request: &Value) -> Reply {
    let config = request
        .get("generationConfig")
        .or_else(|| request.get("generation_config"));
    let wants_json = config
        .and_then(|c| {
            c.get("responseMimeType")
                .or_else(|| c.get("response_mime_type"))
        })
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case("application/json"));
    if wants_json {
        let schema = config.and_then(|c| {
            c.get("responseJsonSchema")
                .or_else(|| c.get("responseSchema"))
                .or_else(|| c.get("response_json_schema"))
                .or_else(|| c.get("response_schema"))
        });
        let value = match schema {
            Some(s) => schema_value(s, 0),
            None => json!({"answer": text_answer(model, request)}),
        };
        return Reply::Text(value.to_string());
    }
    Reply::Text(text_answer(model, request))
}

/// The text of the request's last content (its `text` parts joined), if it has any.
pub fn last_content_text(request: &Value) -> Option<String> {
    let last = request.get("contents")?.as_array()?.last()?;
    let parts = last.get("parts")?.as_array()?;
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    if texts.is_empty() {
        None
    } else {
        Some(texts.join(""))
    }
}

fn last_text_part(request: &Value) -> Option<String> {
    let last = request.get("contents")?.as_array()?.last()?;
    last.get("parts")?
        .as_array()?
        .iter()
        .rev()
        .find_map(|p| p.get("text").and_then(Value::as_str).map(String::from))
}

/// Name of the function whose response the last content carries, if it is a tool turn.
fn last_function_response(request: &Value) -> Option<String> {
    let last = request.get("contents")?.as_array()?.last()?;
    last.get("parts")?.as_array()?.iter().find_map(|p| {
        p.get("functionResponse")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(String::from)
    })
}

fn text_answer(model: &str, request: &Value) -> String {
    if let Some(tool) = last_function_response(request) {
        return format!(
            "The tool {} finished and its result was received. This is the gemfleet emulator \
             ({model}) closing the turn with a deterministic summary of that result.",
            snippet(&tool)
        );
    }
    // Clients put context before the prompt in the same content: quote its last text part.
    let prompt = last_text_part(request).unwrap_or_default();
    format!(
        "This is the gemfleet emulator ({model}) answering \"{}\". The same request always \
         gets these same words, so tests can compare answers, token counts and the ledger \
         exactly.",
        snippet(&prompt)
    )
}

/// The first line of `s`, at most 60 characters, without quotes.
fn snippet(s: &str) -> String {
    let line = s.trim().lines().next().unwrap_or("");
    line.chars()
        .filter(|c| *c != '"' && *c != '\\')
        .take(60)
        .collect()
}

/// A value valid for a JSON Schema or Gemini `Schema` (OpenAPI subset, types upper- or
/// lower-case): every property present, enums take their first value, numbers their minimum
/// (or 1), arrays their minimum length (at least one item when allowed).
pub fn schema_value(schema: &Value, depth: u32) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    let Some(obj) = schema.as_object() else {
        return Value::Null;
    };
    if let Some(c) = obj.get("const") {
        return c.clone();
    }
    if let Some(Value::Array(values)) = obj.get("enum")
        && let Some(first) = values.first()
    {
        return first.clone();
    }
    for alt in ["anyOf", "oneOf", "any_of", "one_of"] {
        if let Some(Value::Array(options)) = obj.get(alt)
            && let Some(first) = options.first()
        {
            return schema_value(first, depth + 1);
        }
    }
    if let Some(Value::Array(all)) = obj.get("allOf") {
        let mut merged = Map::new();
        for s in all {
            if let Value::Object(m) = schema_value(s, depth + 1) {
                merged.extend(m);
            }
        }
        return Value::Object(merged);
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.to_ascii_lowercase(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| !t.eq_ignore_ascii_case("null"))
            .unwrap_or("null")
            .to_ascii_lowercase(),
        _ if obj.contains_key("properties") => "object".into(),
        _ if obj.contains_key("items") => "array".into(),
        _ => "string".into(),
    };
    match ty.as_str() {
        "object" => {
            let mut out = Map::new();
            if let Some(Value::Object(props)) = obj.get("properties") {
                for (name, s) in props {
                    out.insert(name.clone(), schema_value(s, depth + 1));
                }
            }
            // Required names without a property schema still need a value.
            if let Some(Value::Array(required)) = obj.get("required") {
                for name in required.iter().filter_map(Value::as_str) {
                    out.entry(name.to_owned())
                        .or_insert_with(|| Value::String("emulated".into()));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let min = number(obj, "minItems").unwrap_or(0.0).max(0.0) as usize;
            let max = number(obj, "maxItems").map(|m| m.max(0.0) as usize);
            let n = max.map_or(min.max(1), |m| min.max(1).min(m)).min(64);
            let item = obj
                .get("items")
                .map_or(Value::String("emulated".into()), |s| {
                    schema_value(s, depth + 1)
                });
            Value::Array(vec![item; n])
        }
        "integer" => {
            let v = bounded(obj, 1.0).ceil();
            json!(v as i64)
        }
        "number" => json!(bounded(obj, 1.0)),
        "boolean" => Value::Bool(false),
        "null" => Value::Null,
        _ => {
            let min = number(obj, "minLength").unwrap_or(0.0).max(0.0) as usize;
            let mut s = String::from("emulated");
            while s.chars().count() < min.min(4096) {
                s.push('x');
            }
            if let Some(max) = number(obj, "maxLength") {
                s = s.chars().take(max.max(0.0) as usize).collect();
            }
            Value::String(s)
        }
    }
}

fn number(obj: &Map<String, Value>, key: &str) -> Option<f64> {
    match obj.get(key)? {
        Value::Number(n) => n.as_f64(),
        // The Gemini Schema carries int64 fields as strings.
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn bounded(obj: &Map<String, Value>, default: f64) -> f64 {
    let mut v = default;
    if let Some(min) = number(obj, "minimum") {
        v = v.max(min);
    }
    if let Some(max) = number(obj, "maximum") {
        v = v.min(max);
    }
    if v.is_finite() { v } else { default }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_schema_gets_required_fields() {
        let req = json!({"contents": [{"role":"user","parts":[{"text":"hi"}]}],
            "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": {
                "type": "OBJECT",
                "properties": {
                    "complexity_reasoning": {"type": "STRING"},
                    "complexity_score": {"type": "INTEGER"}
                },
                "required": ["complexity_reasoning", "complexity_score"]}}});
        let Reply::Text(t) = default_reply("gemini-3.5-flash-lite", &req) else {
            panic!()
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        assert!(v["complexity_reasoning"].is_string());
        assert_eq!(v["complexity_score"], json!(1));
    }

    #[test]
    fn enums_take_the_first_value_and_bounds_hold() {
        let s = json!({"type": "object", "properties": {
            "next_speaker": {"type": "string", "enum": ["user", "model"]},
            "n": {"type": "number", "minimum": 5, "maximum": 9},
            "list": {"type": "array", "items": {"type": "boolean"}, "minItems": 2}},
            "required": ["next_speaker", "extra"]});
        let v = schema_value(&s, 0);
        assert_eq!(v["next_speaker"], "user");
        assert_eq!(v["n"], json!(5.0));
        assert_eq!(v["list"], json!([false, false]));
        assert_eq!(v["extra"], "emulated");
    }

    #[test]
    fn text_is_deterministic_and_depends_on_the_prompt() {
        let a = json!({"contents": [{"role":"user","parts":[{"text":"alpha"}]}]});
        let b = json!({"contents": [{"role":"user","parts":[{"text":"beta"}]}]});
        assert_eq!(default_reply("m", &a), default_reply("m", &a));
        assert_ne!(default_reply("m", &a), default_reply("m", &b));
    }
}
