//! Maps dotted paths (`services.checkout.team`, `normalize.redact_patterns[1]`)
//! to the 1-based line where that key or item starts, using a YAML event parser.

use std::collections::BTreeMap;

use yaml_rust2::parser::{Event, Parser};

enum Frame {
    Map {
        key: Option<String>,
        expect_key: bool,
    },
    Seq {
        index: usize,
    },
}

/// Line of every key and sequence item in `text`, by dotted path.
pub fn key_lines(text: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut path: Vec<String> = Vec::new();
    // Bounded by the text's size; malformed YAML simply stops the scan.
    while let Ok((event, mark)) = parser.next_token() {
        let line = mark.line();
        match event {
            Event::StreamEnd => break,
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                enter_value(&mut stack, &mut path, &mut out, line);
                stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map {
                        key: None,
                        expect_key: true,
                    }
                } else {
                    Frame::Seq { index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                leave_value(&mut stack, &mut path);
            }
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map { key, expect_key }) = stack.last_mut()
                    && *expect_key
                {
                    *key = Some(value.clone());
                    *expect_key = false;
                    path.push(value);
                    out.entry(path.join(".")).or_insert(line);
                    continue;
                }
                enter_value(&mut stack, &mut path, &mut out, line);
                leave_value(&mut stack, &mut path);
            }
            Event::Alias(_) => {
                enter_value(&mut stack, &mut path, &mut out, line);
                leave_value(&mut stack, &mut path);
            }
            _ => {}
        }
    }
    out
}

fn enter_value(
    stack: &mut [Frame],
    path: &mut Vec<String>,
    out: &mut BTreeMap<String, usize>,
    line: usize,
) {
    if let Some(Frame::Seq { index }) = stack.last_mut() {
        let last = path.pop().unwrap_or_default();
        let item = format!("{last}[{index}]");
        path.push(item);
        out.entry(path.join(".")).or_insert(line);
    }
}

fn leave_value(stack: &mut [Frame], path: &mut Vec<String>) {
    match stack.last_mut() {
        Some(Frame::Map { key, expect_key }) => {
            if key.take().is_some() {
                path.pop();
            }
            *expect_key = true;
        }
        Some(Frame::Seq { index }) => {
            // Turn `name[i]` back into `name` for the next item.
            if let Some(last) = path.last_mut()
                && let Some(pos) = last.rfind('[')
            {
                last.truncate(pos);
            }
            *index += 1;
        }
        None => {}
    }
}

/// The line of `path`, or of its nearest located ancestor.
pub fn line_of(lines: &BTreeMap<String, usize>, path: &str) -> Option<usize> {
    let mut p = path.to_owned();
    loop {
        if let Some(l) = lines.get(&p) {
            return Some(*l);
        }
        let cut = p.rfind(['.', '['])?;
        p.truncate(cut);
    }
}
