//! Prints what the hot paths cost on this machine (run with `--release`):
//! `cargo run -p gemfleet-gemini --release --example bench`.
//!
//! - the SSE parser plus usage tracking, as the proxy runs them on every chunk of a stream;
//! - the classifier on each shared case file.

use gemfleet_gemini::sse::SseParser;
use gemfleet_gemini::usage::UsageTracker;
use std::time::Instant;

fn main() {
    sse_throughput();
    classify_latency();
}

fn sse_throughput() {
    // A realistic stream: ~400-byte text chunks with usageMetadata, as Gemini sends them.
    let chunk = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris.\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":31000,\"candidatesTokenCount\":120,\"totalTokenCount\":31120},\"modelVersion\":\"gemini-2.5-flash\"}\r\n\r\n";
    let events = 25_000;
    let stream = chunk.repeat(events);
    for read_size in [1024usize, 16 * 1024] {
        let start = Instant::now();
        let mut parser = SseParser::new();
        let mut tracker = UsageTracker::new();
        let mut items = Vec::new();
        let mut seen = 0usize;
        for piece in stream.as_bytes().chunks(read_size) {
            parser.push(piece, &mut items);
            for item in items.drain(..) {
                tracker.observe_item(&item);
                seen += 1;
            }
        }
        parser.finish(&mut items);
        let secs = start.elapsed().as_secs_f64();
        let mb = stream.len() as f64 / 1e6;
        println!(
            "sse+usage  reads of {read_size:>5} B: {mb:.1} MB, {seen} events in {:.1} ms = {:.0} MB/s, {:.2} µs/event",
            secs * 1e3,
            mb / secs,
            secs * 1e6 / seen.max(1) as f64
        );
    }
}

fn classify_latency() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("no fixtures at {}", dir.display());
        return;
    };
    let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    let now = chrono::Utc::now();
    let mut total = 0.0;
    let mut count = 0;
    let mut worst = (0.0f64, String::new());
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.starts_with('c') {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let body = if name.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&text)
                .map(|v| v["body"].to_string())
                .unwrap_or(text)
        } else {
            text
        };
        let iterations = 2_000;
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(gemfleet_gemini::classify(None, &body, None, now));
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;
        total += us;
        count += 1;
        if us > worst.0 {
            worst = (us, name);
        }
    }
    println!(
        "classify: {count} case files, mean {:.1} µs/call, slowest {:.1} µs ({})",
        total / count.max(1) as f64,
        worst.0,
        worst.1
    );
}
