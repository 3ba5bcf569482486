//! loss.png: decodes, has the curves, has text when a font is installed, and is written
//! crash-safely (no temporary file left behind).

// Test scenarios read top to bottom: a long one is clearer whole than cut into steps.
#![allow(clippy::too_many_lines)]

use h5gpt_core::plot::{font_status, write_loss_plot, FONT_ENV, HEIGHT, WIDTH};
use image::RgbImage;
use std::path::Path;

/// `(tokens seen, loss)` points.
type Curve = Vec<(u64, f64)>;

/// A decaying, noisy train curve (deterministic) and a val curve every 100 steps.
fn curves(steps: u64) -> (Curve, Curve) {
    let loss = |step: u64| 3.0 + 8.0 * (-(step as f64) / 150.0).exp();
    let train = (0..steps)
        .map(|s| {
            let noise = 0.3 * ((s * 7919 % 101) as f64 / 101.0 - 0.5);
            (s * 16_384, loss(s) + noise)
        })
        .collect();
    let val = (0..steps)
        .step_by(100)
        .map(|s| (s * 16_384, loss(s) + 0.1))
        .collect();
    (train, val)
}

fn decode(path: &Path) -> RgbImage {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// Pixels in the train colour (blue) and the val colour (red).
fn curve_pixels(img: &RgbImage) -> (usize, usize) {
    let (mut blue, mut red) = (0, 0);
    for p in img.pixels() {
        let [r, g, b] = p.0.map(i32::from);
        if b > r + 40 && b > g + 20 {
            blue += 1;
        }
        if r > g + 80 && r > b + 80 {
            red += 1;
        }
    }
    (blue, red)
}

/// Near-black pixels: text (and the axes).
fn dark_pixels(img: &RgbImage) -> usize {
    img.pixels()
        .filter(|p| p.0.iter().all(|&c| c < 100))
        .count()
}

fn only_file(dir: &Path) -> String {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "temporary files left: {names:?}");
    names.into_iter().next().unwrap()
}

#[test]
fn writes_a_png_with_both_curves_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.png");
    let (train, val) = curves(1000);
    write_loss_plot(&path, &train, &val, "d12 on fineweb").unwrap();
    assert_eq!(only_file(dir.path()), "loss.png");
    let img = decode(&path);
    assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
    assert_eq!((WIDTH, HEIGHT), (1000, 600));
    let (blue, red) = curve_pixels(&img);
    assert!(blue > 1000, "train curve: {blue} blue pixels");
    assert!(red > 100, "val curve: {red} red pixels");
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 20, "{} distinct colours", colours.len());

    // Rewriting replaces the file in place.
    write_loss_plot(&path, &train[..10], &[], "").unwrap();
    assert_eq!(only_file(dir.path()), "loss.png");
    assert_eq!(decode(&path).dimensions(), (WIDTH, HEIGHT));
}

#[test]
fn draws_text_with_the_font() {
    let font = font_status().unwrap_or_else(|| {
        panic!(
            "no font for loss.png ({FONT_ENV} unset or unusable, no DejaVu/Liberation installed): \
             run scripts/setup.sh (installs fonts-dejavu-core) or set {FONT_ENV}"
        )
    });
    assert!(font.is_file(), "{}", font.display());
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = curves(300);
    let untitled = dir.path().join("untitled.png");
    let titled = dir.path().join("titled.png");
    write_loss_plot(&untitled, &train, &val, "").unwrap();
    write_loss_plot(
        &titled,
        &train,
        &val,
        "A long title: GPT-2 124M on FineWeb-Edu 10B, 8 x 1024 tokens per step",
    )
    .unwrap();
    let (a, b) = (
        dark_pixels(&decode(&untitled)),
        dark_pixels(&decode(&titled)),
    );
    // Tick labels, axis names and the legend are text too: even untitled, much is dark.
    assert!(
        a > 2000,
        "untitled: {a} dark pixels (no tick labels or legend?)"
    );
    assert!(b > a + 1000, "title drew {b} - {a} dark pixels");
}

#[test]
fn edge_cases_still_give_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Curve, Curve); 6] = [
        ("nothing", vec![], vec![]),
        ("one_point", vec![(0, 10.9)], vec![]),
        ("only_val", vec![], vec![(1000, 4.0), (2000, 3.5)]),
        (
            "flat",
            vec![(0, 2.0), (10, 2.0), (20, 2.0)],
            vec![(20, 2.0)],
        ),
        (
            "non_finite",
            vec![
                (0, f64::NAN),
                (1, 10.0),
                (2, f64::INFINITY),
                (3, 9.0),
                (4, f64::NEG_INFINITY),
            ],
            vec![(4, f64::NAN)],
        ),
        (
            "same_tokens",
            vec![(u64::MAX, 1.0), (u64::MAX, 2.0)],
            vec![(u64::MAX, 1.5)],
        ),
    ];
    for (name, train, val) in cases {
        let path = dir.path().join(format!("{name}.png"));
        write_loss_plot(&path, &train, &val, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decode(&path).dimensions(), (WIDTH, HEIGHT), "{name}");
    }
    let img = decode(&dir.path().join("non_finite.png"));
    assert!(
        curve_pixels(&img).0 > 50,
        "finite points of non_finite drawn"
    );
}

#[test]
fn error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("loss.png");
    let err = write_loss_plot(&path, &[(0, 1.0)], &[], "").unwrap_err();
    assert!(
        err.to_string()
            .contains(&*dir.path().join("missing").to_string_lossy()),
        "{err}"
    );
}

/// Set for the child process of `draws_curves_without_a_font`: where it writes its plot.
const CHILD_OUT: &str = "H5GPT_TEST_PLOT_OUT";

/// Runs `child_without_font` in a process of its own (the font is registered once per process)
/// with `H5GPT_FONT` pointing nowhere.
#[test]
fn draws_curves_without_a_font() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.png");
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["child_without_font", "--exact", "--ignored"])
        .env(FONT_ENV, dir.path().join("no-such-font.ttf"))
        .env(CHILD_OUT, &path)
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "child: {}\n{}{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let img = decode(&path);
    assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
    let (blue, red) = curve_pixels(&img);
    assert!(
        blue > 1000 && red > 100,
        "curves: {blue} blue, {red} red pixels"
    );
}

#[test]
#[ignore = "run by draws_curves_without_a_font in a process of its own"]
fn child_without_font() {
    let Some(out) = std::env::var_os(CHILD_OUT) else {
        return;
    };
    assert_eq!(font_status(), None, "{FONT_ENV} points nowhere");
    let (train, val) = curves(1000);
    write_loss_plot(Path::new(&out), &train, &val, "no text without a font").unwrap();
}
