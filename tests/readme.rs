//! The README's walkthrough is `examples/walkthrough.rs`, which CI runs against the real DTM
//! (`scripts/demo.sh walkthrough`): this keeps the two identical, so the README's program
//! runs as written.

#[test]
fn the_readme_walkthrough_is_the_example_that_ci_runs() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/walkthrough.rs");
    let section = readme
        .split("## Walkthrough: a first service")
        .nth(1)
        .expect("the README has the walkthrough section");
    let block = section
        .split("```rust,no_run\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the walkthrough has a rust block");
    let program: Vec<&str> = example
        .lines()
        .skip_while(|line| line.starts_with("//!"))
        .collect();
    assert_eq!(
        block.trim(),
        program.join("\n").trim(),
        "README walkthrough and examples/walkthrough.rs differ"
    );
}
