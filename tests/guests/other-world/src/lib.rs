//! A valid component of another world (`greeter`, exporting `greet`), to show
//! that `runtime install` says what it is rather than failing obscurely.

#![allow(
    unsafe_code,
    missing_docs,
    reason = "wit-bindgen's generated exports are unsafe and undocumented"
)]

wit_bindgen::generate!({
    inline: "
        package example:greeter@1.0.0;
        world greeter {
            export greet: func(name: string) -> string;
        }
    ",
});

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

export!(Greeter);
