//! A generation stops when its reader goes away. mistralrs has no public count of running
//! sequences, but on a CPU a generation is compute-bound, so this process's CPU time shows
//! whether one is running. Alone in its test binary so no other test's work is counted.

#![cfg(target_os = "linux")]

use std::time::Duration;

use graft_engine::{BaseModel, ChatMessage, ChatRequest, Engine, Role, Sampling, StreamEvent};
use graft_tests::kit_file;

/// CPU seconds this process has used (user + system), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf reads a constant of the running system.
    let per_second = unsafe { libc_sysconf_clk_tck() } as f64;
    ticks / per_second
}

extern "C" {
    fn sysconf(name: i32) -> i64;
}

/// `sysconf(_SC_CLK_TCK)`; `_SC_CLK_TCK` is 2 on Linux.
unsafe fn libc_sysconf_clk_tck() -> i64 {
    sysconf(2)
}

async fn cpu_over(window: Duration) -> f64 {
    let before = cpu_seconds();
    tokio::time::sleep(window).await;
    cpu_seconds() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_token_stream_stops_the_generation() {
    let base = BaseModel::cpu("smollm2", kit_file("smollm2-135m-instruct"), 1);
    let engine = Engine::load(&base).await.unwrap();
    // Greedy SmolLM2 writes well past 400 tokens for this prompt (checked by hand), so without
    // cancellation the generation would still be running throughout the idle window below.
    let request = ChatRequest {
        messages: vec![ChatMessage::new(
            Role::User,
            "Write a very long story about a dragon who learns to program.",
        )],
        sampling: Sampling::greedy(1500),
    };
    let mut stream = engine.chat_stream(request).await.unwrap();
    assert!(matches!(stream.next().await, Some(Ok(StreamEvent::Text { .. }))));

    // Control: while the generation runs, the process is busy. The reader keeps reading so
    // the generation is not held up by a full buffer.
    let reader = tokio::spawn(async move {
        let mut pieces = 0;
        while let Some(Ok(StreamEvent::Text { .. })) = stream.next().await {
            pieces += 1;
            if pieces == 60 {
                break;
            }
        }
        (stream, pieces)
    });
    let busy = cpu_over(Duration::from_millis(1000)).await;
    let (stream, pieces) = reader.await.unwrap();
    assert_eq!(pieces, 60, "the story is long enough to still be running");
    assert!(busy > 0.4, "a running generation uses the CPU ({busy:.2} s in 1 s)");

    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = cpu_over(Duration::from_millis(2000)).await;
    assert!(idle < 0.3, "after the reader is gone the generation stops ({idle:.2} CPU s in 2 s)");
}
