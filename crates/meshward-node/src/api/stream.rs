//! `GET /v1/events`: live ledger events as Server-Sent Events.
//!
//! Each event is `event: <type>` (`block`, `anchor`, `quarantine`) with its JSON as `data:`.
//! `?types=block,anchor` keeps only those kinds. A subscriber that falls more than
//! [`EVENT_QUEUE`](crate::events::EVENT_QUEUE) events behind gets `event: lagged` with
//! `{"type":"lagged","missed":N}` and continues with the oldest event still held. A comment
//! line is sent every 15 s of silence so proxies keep the connection open. At most
//! [`MAX_EVENT_STREAMS`] subscribers at once.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};

use super::{query_params, ApiError};
use crate::events::{Event, EVENT_KINDS};
use crate::Gateway;

/// Most concurrent `GET /v1/events` subscribers.
pub const MAX_EVENT_STREAMS: usize = 256;

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    types: Option<String>,
}

/// Which kinds a subscriber wants; `None` is all.
type Filter = Option<BTreeSet<&'static str>>;

fn parse_types(types: Option<&str>) -> Result<Filter, ApiError> {
    let Some(types) = types else {
        return Ok(None);
    };
    let mut out = BTreeSet::new();
    for t in types.split(',') {
        let t = t.trim();
        let kind = EVENT_KINDS.iter().find(|k| **k == t).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_types",
                format!(
                    "unknown event type {t:?} in types (known: {})",
                    EVENT_KINDS.join(", ")
                ),
            )
        })?;
        out.insert(*kind);
    }
    Ok(Some(out))
}

/// What a subscriber is sent next.
#[derive(Debug, PartialEq)]
enum Item {
    Event(Event),
    Lagged(u64),
}

/// The next item for a subscriber; `None` once the node stops publishing.
async fn next_item(rx: &mut broadcast::Receiver<Event>, filter: &Filter) -> Option<Item> {
    loop {
        match rx.recv().await {
            Ok(ev) if filter.as_ref().is_none_or(|f| f.contains(ev.kind())) => {
                return Some(Item::Event(ev))
            }
            Ok(_) => continue,
            Err(RecvError::Lagged(n)) => return Some(Item::Lagged(n)),
            Err(RecvError::Closed) => return None,
        }
    }
}

fn to_sse(item: Item) -> SseEvent {
    match item {
        Item::Event(ev) => SseEvent::default()
            .event(ev.kind())
            .data(serde_json::to_string(&ev).expect("events are plain data")),
        Item::Lagged(n) => {
            let ev = Event::Lagged { missed: n };
            SseEvent::default()
                .event(ev.kind())
                .data(serde_json::to_string(&ev).expect("events are plain data"))
        }
    }
}

pub(super) async fn events(
    State(s): State<Arc<Gateway>>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let q = query_params(q)?;
    let filter = parse_types(q.types.as_deref())?;
    if s.events.subscribers() >= MAX_EVENT_STREAMS {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("this node serves at most {MAX_EVENT_STREAMS} event streams; try later"),
        ));
    }
    let rx = s.events.subscribe();
    let stream = futures_util::stream::unfold((rx, filter), |(mut rx, filter)| async move {
        let item = next_item(&mut rx, &filter).await?;
        Some((Ok(to_sse(item)), (rx, filter)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(h: u64) -> Event {
        Event::Block {
            height: h,
            hash: String::new(),
            time_ms: 0,
            txs: 0,
        }
    }

    #[test]
    fn types_filter_parses_and_refuses_unknown() {
        assert_eq!(parse_types(None).unwrap(), None);
        let f = parse_types(Some("block, anchor")).unwrap().unwrap();
        assert!(f.contains("block") && f.contains("anchor") && !f.contains("quarantine"));
        assert!(parse_types(Some("block,nope")).is_err());
        assert!(parse_types(Some("")).is_err());
    }

    #[tokio::test]
    async fn lagging_subscriber_is_told_and_continues() {
        let (tx, mut rx) = broadcast::channel(4);
        for h in 0..10 {
            tx.send(block(h)).unwrap();
        }
        assert_eq!(next_item(&mut rx, &None).await, Some(Item::Lagged(6)));
        assert_eq!(next_item(&mut rx, &None).await, Some(Item::Event(block(6))));
        drop(tx);
        for h in 7..10 {
            assert_eq!(next_item(&mut rx, &None).await, Some(Item::Event(block(h))));
        }
        assert_eq!(next_item(&mut rx, &None).await, None);
    }

    #[tokio::test]
    async fn filter_skips_other_kinds() {
        let (tx, mut rx) = broadcast::channel(8);
        tx.send(block(1)).unwrap();
        let q = Event::Quarantine {
            device: "d".into(),
            reason: "r".into(),
            height: 1,
            by_evidence: false,
        };
        tx.send(q.clone()).unwrap();
        let f = parse_types(Some("quarantine")).unwrap();
        assert_eq!(next_item(&mut rx, &f).await, Some(Item::Event(q)));
    }
}
