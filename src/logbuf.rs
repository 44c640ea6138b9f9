//! The last log events, kept for the console and `/status.json`.
//!
//! A `tracing` layer beside the usual formatter: every event at INFO or
//! above is rendered to one line (its message and fields, with the
//! fields of its spans, e.g. `real{addr=10.0.0.1}`) and pushed into a
//! bounded ring that the control loop copies into each status snapshot.

use crate::status::LogEvent;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Events kept.
pub const CAPACITY: usize = 200;

/// A shared ring of the latest events.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<VecDeque<LogEvent>>>);

impl LogBuffer {
    /// The events now held, oldest first.
    pub fn snapshot(&self) -> VecDeque<LogEvent> {
        self.0.lock().map(|q| q.clone()).unwrap_or_default()
    }

    fn push(&self, e: LogEvent) {
        if let Ok(mut q) = self.0.lock() {
            if q.len() == CAPACITY {
                q.pop_front();
            }
            q.push_back(e);
        }
    }

    /// The layer that feeds this buffer.
    pub fn layer(&self) -> LogLayer {
        LogLayer(self.clone())
    }
}

/// See the module documentation.
pub struct LogLayer(LogBuffer);

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

/// Span fields, rendered once when the span is created.
struct SpanFields(String);

impl<S> tracing_subscriber::Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut l = Line::default();
        attrs.record(&mut l);
        if let Some(span) = ctx.span(id) {
            let text = format!("{}{{{}}}", span.name(), l.fields.trim_start());
            span.extensions_mut().insert(SpanFields(text));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::INFO {
            return;
        }
        let mut l = Line::default();
        event.record(&mut l);
        let mut prefix = String::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    prefix.push_str(&f.0);
                    prefix.push_str(": ");
                }
            }
        }
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.0.push(LogEvent {
            at_ms,
            level: level.as_str().to_ascii_lowercase(),
            message: format!("{prefix}{}{}", l.message, l.fields),
        });
    }
}
