"""Recipes: the YAML of DESIGN.md, errors that name step, key and allowed values,
a stable canonical form for the cache key, sensible defaults, checks against a dataset."""

from __future__ import annotations

import math

import pytest

from prefect_hpcviz.viz.datasets import DatasetSummary, FieldSummary
from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.reduce import Recipe, load_recipe

DESIGN_EXAMPLE = """\
fields: [pressure, velocity]   # optional: keep only these
time: {stride: 2}              # optional: every 2nd time step
steps:                         # applied in order
  - crop: {bounds: [0, 1, 0, 1, 0, 0.5]}
  - coarsen: {factor: 4, how: mean}      # volume steps change the volume
  - contour: {field: pressure, values: [0.2, 0.8]}   # geometry steps add a layer
  - slice: {normal: [0, 0, 1], origin: [0, 0, 0.25]}
"""


def summary(kind="ImageData", dims=(192, 192, 192), bounds=(-1, 1, -1, 1, -1, 1)) -> DatasetSummary:
    return DatasetSummary(
        source="sim/simulation.pvd",
        format="pvd",
        kind=kind,
        fields=[
            FieldSummary("velocity", "point", 3, "float32", (0.0, 2.0)),
            FieldSummary("pressure", "point", 1, "float32", (-0.5, 1.5)),
            FieldSummary("rank", "cell", 1, "int32", (0.0, 7.0)),
        ],
        bounds=bounds,
        dimensions=dims,
        n_points=math.prod(dims) if dims else 1000,
        n_cells=1000,
        time_values=[0.0, 0.5, 1.0],
        nbytes=1 << 20,
    )


def test_the_design_md_example_parses_step_by_step():
    recipe = Recipe.from_yaml(DESIGN_EXAMPLE)
    assert recipe.fields == ["pressure", "velocity"]
    assert recipe.stride == 2
    assert [s.kind for s in recipe.steps] == ["crop", "coarsen", "contour", "slice"]
    crop, coarsen, contour, plane = (s.spec for s in recipe.steps)
    assert crop.bounds == (0, 1, 0, 1, 0, 0.5)
    assert coarsen.factor == (4, 4, 4) and coarsen.how == "mean"
    assert contour.field == "pressure" and contour.values == [0.2, 0.8]
    assert plane.normal == (0, 0, 1) and plane.origin == (0, 0, 0.25)
    assert [s.is_geometry for s in recipe.steps] == [False, False, True, True]


def test_a_recipe_reads_back_from_its_own_yaml():
    recipe = Recipe.from_yaml(DESIGN_EXAMPLE)
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe


def test_optional_parts_have_defaults():
    recipe = Recipe.from_yaml("steps:\n  - coarsen: {factor: [2, 2, 1]}\n  - slice:\n")
    assert recipe.fields is None and recipe.time is None and recipe.stride == 1
    assert recipe.steps[0].coarsen.how == "mean"
    assert recipe.steps[1].slice.normal == (0, 0, 1) and recipe.steps[1].slice.origin is None
    assert Recipe.from_yaml("").steps == []
    assert Recipe.from_yaml("steps: [{slice: {normal: x}}]").steps[0].slice.normal == (1, 0, 0)


def test_canonical_json_is_stable_under_key_reordering_and_equivalent_spellings():
    reordered = """\
steps:
  - crop: {bounds: [0, 1, 0, 1, 0, 0.5]}
  - coarsen: {how: mean, factor: [4, 4, 4]}
  - contour: {values: [0.2, 0.8], field: pressure}
  - slice: {origin: [0, 0, 0.25], normal: z}
time: {stride: 2}
fields: [pressure, velocity]
"""
    a, b = Recipe.from_yaml(DESIGN_EXAMPLE), Recipe.from_yaml(reordered)
    assert a.canonical_json() == b.canonical_json()
    assert a.canonical_json() == Recipe.from_yaml(DESIGN_EXAMPLE).canonical_json()
    assert '"factor":[4,4,4]' in a.canonical_json()
    different = Recipe.from_yaml(DESIGN_EXAMPLE.replace("factor: 4", "factor: 2"))
    assert different.canonical_json() != a.canonical_json()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps: [{crop: {bounds: [0, 1, 0, 1, 0, 1]}}, {coarsen: {factor: 4, how: median}}]",
         "recipe step 2 (coarsen): 'how' must be one of mean, max; got 'median'"),
        ("steps: [{coarsen: {factor: 0}}]",
         "recipe step 1 (coarsen): 'factor' must be a whole number >= 1, or a list of 3 of them"),
        ("steps: [{coarsen: {factor: [2, 2]}}]", "'factor' must be a whole number >= 1"),
        ("steps: [{coarsen: {how: max}}]", "recipe step 1 (coarsen): 'factor' is required"),
        ("steps: [{coarsen: {factor: 2, hwo: mean}}]",
         "recipe step 1 (coarsen): unknown key 'hwo'; known keys: factor, how"),
        ("steps: [{crop: {bounds: [0, 1, 0, 1]}}]",
         "recipe step 1 (crop): 'bounds' must be 6 numbers [xmin, xmax, ymin, ymax, zmin, zmax] "
         "with each min <= max; got [0, 1, 0, 1]"),
        ("steps: [{crop: {bounds: [0, 1, 0, 1, 1, 0]}}]", "with each min <= max; got [0, 1, 0, 1, 1, 0]"),
        ("steps: [{contour: {field: pressure, values: []}}]",
         "recipe step 1 (contour): 'values' must be a non-empty list of numbers"),
        ("steps: [{contour: {values: [1]}}]", "recipe step 1 (contour): 'field' is required"),
        ("steps: [{slice: {normal: [0, 0, 0]}}]",
         "recipe step 1 (slice): 'normal' must be 3 numbers, not all zero, or one of x, y, z"),
        ("steps: [{slice: {origin: [1, 2]}}]", "recipe step 1 (slice): 'origin' must be 3 numbers"),
        ("steps: [{slice: {}}, {smooth: {iterations: 3}}]",
         "recipe step 2: unknown step kind 'smooth'; known kinds: crop, coarsen, downcast, contour, slice, decimate, clip, statistics"),
        ("steps: [{coarsen: {factor: 2}, slice: {}}]",
         "recipe step 1: a step must be a mapping with one key, the step kind (crop, coarsen, downcast, contour, slice, decimate, clip, statistics)"),
        ("steps: [{contour: 3}]", "recipe step 1 (contour): the options must be a mapping; got 3"),
        ("steps: {coarsen: {factor: 2}}", "recipe: 'steps' must be a list of steps"),
        ("time: {stride: 0}", "recipe: 'time.stride' must be a whole number >= 1, e.g. 2; got 0"),
        ("time: {every: 2}", "recipe: unknown key 'time.every'; known keys: stride"),
        ("fields: pressure", "recipe: 'fields' must be a list of field names"),
        ("stepz: []", "recipe: unknown key 'stepz'; known keys: fields, time, steps"),
        ("[1, 2]", "recipe: a recipe must be a mapping with keys fields, time, steps"),
    ],
)
def test_every_recipe_error_names_the_step_the_key_and_the_allowed_values(text, expected):
    with pytest.raises(InputError) as caught:
        Recipe.from_yaml(text)
    assert expected in str(caught.value)
    assert str(caught.value).endswith(".")  # the fix follows the problem


def test_step_errors_quote_an_example_of_that_step_as_the_fix():
    with pytest.raises(InputError, match=r"Write e\.g\. `- coarsen: \{factor: 4, how: mean\}`"):
        Recipe.from_yaml("steps: [{coarsen: {factor: 4, how: median}}]")


def test_load_recipe_names_the_file_when_it_is_missing(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InputError, match=f"{missing}: no such recipe file"):
        load_recipe(missing)


def test_load_recipe_names_the_file_and_line_of_a_yaml_syntax_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("time: {stride: 2}\nsteps:\n  - coarsen: {factor: 4\n  - slice: {}\n")
    with pytest.raises(InputError) as caught:
        load_recipe(path)
    message = str(caught.value)
    assert f"{path} (line 4, column 10): not valid YAML: expected ',' or '}}', but got ':'" in message
    assert "(while parsing a flow mapping that starts on line 3)" in message


def test_load_recipe_names_the_file_in_validation_errors(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(DESIGN_EXAMPLE.replace("how: mean", "how: median"))
    with pytest.raises(InputError, match=f"{path} step 2 \\(coarsen\\): 'how' must be one of mean, max"):
        load_recipe(path)
    path.write_text(DESIGN_EXAMPLE)
    assert load_recipe(path) == Recipe.from_yaml(DESIGN_EXAMPLE)


def test_default_recipe_coarsens_to_at_most_96_cubed_and_adds_a_contour_and_a_slice():
    recipe = Recipe.default_for(summary())
    coarsen, contour, plane = recipe.steps
    assert coarsen.coarsen.factor == (2, 2, 2)  # 192^3 -> 96^3
    assert contour.contour.field == "pressure"  # the first scalar point field
    assert contour.contour.values == [0.5]  # the middle of (-0.5, 1.5)
    assert plane.slice.normal == (0, 0, 1) and plane.slice.origin is None

    big = Recipe.default_for(summary(dims=(500, 300, 200)))
    factor = big.steps[0].coarsen.factor
    kept = math.prod(d // f for d, f in zip((500, 300, 200), factor))
    assert kept <= 96**3 < math.prod(d // (f - 1) for d, f in zip((500, 300, 200), factor))


def test_default_recipe_does_not_coarsen_small_or_unstructured_data():
    assert [s.kind for s in Recipe.default_for(summary(dims=(64, 64, 64))).steps] == ["contour", "slice"]
    unstructured = summary(kind="UnstructuredGrid", dims=None)
    assert [s.kind for s in Recipe.default_for(unstructured).steps] == ["contour", "slice"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fields: [pressure, temperature]",
         "recipe 'fields': unknown field 'temperature'; available fields: velocity, pressure, rank"),
        ("steps: [{contour: {field: temp, values: [1]}}]",
         "recipe step 1 (contour): 'field' 'temp' is not in the dataset; available fields: velocity, pressure, rank"),
        ("steps: [{contour: {field: velocity, values: [1]}}]",
         "'field' 'velocity' is a vector field (3 components); a contour needs a scalar field. "
         "Contour one of the scalar fields: pressure, rank"),
        ("fields: [velocity]\nsteps: [{contour: {field: pressure, values: [1]}}]",
         "'field' 'pressure' is dropped by the recipe's 'fields' ['velocity']"),
        ("steps: [{crop: {bounds: [2, 3, 0, 1, 0, 1]}}]",
         "recipe step 1 (crop): 'bounds' [2, 3, 0, 1, 0, 1] miss the data, which spans [-1, 1, -1, 1, -1, 1]"),
        ("steps: [{crop: {bounds: [0, 1, 0, 1, 0, 1]}}, {crop: {bounds: [-1, -0.5, 0, 1, 0, 1]}}]",
         "recipe step 2 (crop): 'bounds' [-1, -0.5, 0, 1, 0, 1] miss the data, which spans [0, 1, 0, 1, 0, 1]"),
        ("steps: [{slice: {origin: [0, 0, 5]}}]",
         "recipe step 1 (slice): the plane through [0, 0, 5] with normal [0, 0, 1] misses the volume"),
    ],
)
def test_a_recipe_is_checked_against_the_dataset_before_any_work(text, expected):
    with pytest.raises(InputError) as caught:
        Recipe.from_yaml(text).check_against(summary())
    assert expected in str(caught.value)


def test_coarsen_of_an_unstructured_dataset_is_refused_before_any_work():
    with pytest.raises(InputError, match="coarsen works on ImageData and StructuredGrid data; this dataset is"):
        Recipe.from_yaml("steps: [{coarsen: {factor: 2}}]").check_against(
            summary(kind="UnstructuredGrid", dims=None)
        )


def test_coarsen_after_a_crop_of_a_structured_grid_is_refused_with_the_order_that_works():
    recipe = Recipe.from_yaml("steps: [{crop: {bounds: [0, 1, 0, 1, 0, 1]}}, {coarsen: {factor: 2}}]")
    with pytest.raises(InputError, match="a crop of StructuredGrid data is an UnstructuredGrid. Put coarsen before crop"):
        recipe.check_against(summary(kind="StructuredGrid"))
    recipe.check_against(summary(kind="ImageData"))


def test_the_design_md_example_fits_a_dataset_on_the_unit_cube():
    Recipe.from_yaml(DESIGN_EXAMPLE).check_against(summary(bounds=(0, 1, 0, 1, 0, 1)))
