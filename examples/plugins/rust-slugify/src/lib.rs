//! `slugify`: turns a title into a URL slug, an example of a plugin written
//! in Rust with `orchestrator-sdk` and installed with `runtime install`.
//!
//! Input `{ "text": "Hello, Wörld!", "separator": "-", "max_length": 60 }`;
//! output `{ "slug": "hello-world", "words": 2 }`.

use orchestrator_sdk::{Context, Error, Info, Plugin, export_plugin, json};
use serde::{Deserialize, Serialize};

/// The task's `with:` values.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    text: String,
    #[serde(default = "default_separator")]
    separator: String,
    #[serde(default = "default_max_length")]
    max_length: usize,
}

fn default_separator() -> String {
    "-".to_owned()
}

fn default_max_length() -> usize {
    80
}

/// The result.
#[derive(Serialize)]
pub struct Output {
    slug: String,
    words: usize,
}

/// The plugin.
pub struct Slugify;

impl Plugin for Slugify {
    type Input = Input;
    type Output = Output;

    fn info() -> Info {
        Info::new("slugify", "0.1.0", "Turns a title into a URL slug.")
            .input_schema(json!({
                "type": "object",
                "required": ["text"],
                "properties": {
                    "text": { "type": "string" },
                    "separator": { "type": "string" },
                    "max_length": { "type": "integer", "minimum": 1 }
                }
            }))
            .output_schema(json!({
                "type": "object",
                "properties": { "slug": { "type": "string" }, "words": { "type": "integer" } }
            }))
    }

    fn execute(_: &Context, input: Input) -> Result<Output, Error> {
        if input.separator.chars().any(char::is_alphanumeric) {
            return Err(Error::InvalidInput(format!(
                "`separator` must not contain letters or digits, got `{}`",
                input.separator
            )));
        }
        let words: Vec<String> = input
            .text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(fold)
            .collect();
        let mut slug = String::new();
        for word in &words {
            let extra = if slug.is_empty() {
                0
            } else {
                input.separator.len()
            };
            if slug.len() + extra + word.len() > input.max_length {
                break;
            }
            if !slug.is_empty() {
                slug.push_str(&input.separator);
            }
            slug.push_str(word);
        }
        Ok(Output {
            slug,
            words: words.len(),
        })
    }
}

/// Lower-cases a word and drops common Latin accents.
fn fold(word: &str) -> String {
    word.to_lowercase()
        .chars()
        .map(|c| match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
            'ç' => 'c',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ñ' => 'n',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ý' | 'ÿ' => 'y',
            other => other,
        })
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

export_plugin!(Slugify);
