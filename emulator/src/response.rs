//! The wire shape of answers: GenerateContentResponse JSON for unary calls and the chunk
//! sequence of a stream (usageMetadata on every chunk, complete on the last). Pure.

use serde_json::{Value, json};

use crate::answer::Reply;
use crate::counting::output_tokens;

/// Token usage of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub candidates: u64,
    pub cached: u64,
    pub thoughts: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt + self.candidates + self.thoughts
    }

    fn json(&self, candidates: u64) -> Value {
        let mut u = json!({
            "promptTokenCount": self.prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": self.prompt + candidates + self.thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt}],
        });
        if self.cached > 0 {
            u["cachedContentTokenCount"] = json!(self.cached);
            u["cacheTokensDetails"] = json!([{"modality": "TEXT", "tokenCount": self.cached}]);
        }
        if self.thoughts > 0 {
            u["thoughtsTokenCount"] = json!(self.thoughts);
        }
        u
    }
}

fn part(reply: &Reply) -> Value {
    match reply {
        Reply::Text(t) => json!({"text": t}),
        Reply::FunctionCall { name, args } => json!({"functionCall": {"name": name, "args": args}}),
    }
}

fn response(parts: Value, finish: bool, usage: Value, model: &str, id: &str) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if finish {
        candidate["finishReason"] = json!("STOP");
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": id,
    })
}

/// The body of a unary generateContent answer.
pub fn unary(reply: &Reply, usage: &Usage, model: &str, id: &str) -> Value {
    response(
        json!([part(reply)]),
        true,
        usage.json(usage.candidates),
        model,
        id,
    )
}

/// The chunks of a streamed answer. Text is cut at word boundaries into up to four pieces
/// whose concatenation is the text; each chunk's candidatesTokenCount is cumulative and the
/// last one carries finishReason STOP and the complete usage.
pub fn stream_chunks(reply: &Reply, usage: &Usage, model: &str, id: &str) -> Vec<Value> {
    let pieces: Vec<String> = match reply {
        Reply::Text(t) => split_text(t, 4),
        Reply::FunctionCall { .. } => {
            return vec![unary(reply, usage, model, id)];
        }
    };
    let count = pieces.len();
    let mut chars = 0u64;
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            chars += piece.chars().count() as u64;
            let last = i + 1 == count;
            let so_far = if last {
                usage.candidates
            } else {
                output_tokens(chars).min(usage.candidates)
            };
            response(
                json!([{"text": piece}]),
                last,
                usage.json(so_far),
                model,
                id,
            )
        })
        .collect()
}

/// Splits `text` into at most `n` non-empty pieces at spaces; concatenated they give `text`.
pub fn split_text(text: &str, n: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    if words.len() <= 1 || n <= 1 {
        return vec![text.to_owned()];
    }
    let n = n.min(words.len());
    (0..n)
        .map(|i| words[i * words.len() / n..(i + 1) * words.len() / n].concat())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_pieces_concatenate_to_the_text_and_usage_is_complete_last() {
        let text = "one two three four five six seven eight nine";
        let usage = Usage {
            prompt: 10,
            candidates: output_tokens(text.len() as u64),
            cached: 0,
            thoughts: 3,
        };
        let chunks = stream_chunks(&Reply::Text(text.into()), &usage, "m", "id");
        assert_eq!(chunks.len(), 4);
        let joined: String = chunks
            .iter()
            .map(|c| {
                c["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(joined, text);
        let last = chunks.last().unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(
            last["usageMetadata"]["totalTokenCount"],
            json!(usage.total())
        );
        assert!(chunks[0]["candidates"][0].get("finishReason").is_none());
    }
}
