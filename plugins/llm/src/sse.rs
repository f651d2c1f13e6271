//! Server-sent events, parsed as the bytes arrive: events are separated by a
//! blank line; `event:` names one, `data:` lines (joined with newlines) carry
//! it; comments (`:`) and other fields are ignored.

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field, empty when absent.
    pub name: String,
    /// The `data:` lines, joined.
    pub data: String,
}

/// Bytes in, whole events out.
#[derive(Debug, Default)]
pub struct Parser {
    pending: Vec<u8>,
}

impl Parser {
    /// Takes the next piece of the stream; returns the events it completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some((end, gap)) = blank_line(&self.pending) {
            let block: Vec<u8> = self.pending.drain(..end + gap).take(end).collect();
            if let Some(event) = parse(&String::from_utf8_lossy(&block)) {
                events.push(event);
            }
        }
        events
    }

    /// The event left when the stream ended without a final blank line.
    pub fn finish(&mut self) -> Option<Event> {
        let rest = std::mem::take(&mut self.pending);
        parse(&String::from_utf8_lossy(&rest))
    }
}

/// Where the first blank line starts, and how long the separator is.
fn blank_line(bytes: &[u8]) -> Option<(usize, usize)> {
    (0..bytes.len()).find_map(|i| {
        let rest = &bytes[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else if rest.starts_with(b"\n\n") {
            Some((i, 2))
        } else {
            None
        }
    })
}

fn parse(block: &str) -> Option<Event> {
    let mut event = Event::default();
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event.name = value.to_owned(),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() && event.name.is_empty() {
        return None;
    }
    event.data = data.join("\n");
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_pieces_come_out_whole() {
        let mut parser = Parser::default();
        assert!(parser.push(b"data: {\"a\"").is_empty());
        let events = parser.push(b":1}\n\n: comment\n\nevent: ping\ndata: x\r\n\r\ndata: tail");
        assert_eq!(
            events,
            [
                Event {
                    name: String::new(),
                    data: "{\"a\":1}".into()
                },
                Event {
                    name: "ping".into(),
                    data: "x".into()
                },
            ]
        );
        assert_eq!(parser.finish().map(|e| e.data), Some("tail".into()));
    }
}
