"""Errors a user can act on keep their words, and their type, across processes."""

import pickle

from prefect_hpcviz.viz.errors import InputError


def test_an_input_error_names_the_input_the_problem_and_the_fix():
    error = InputError("sim/out.pvd", "no such file or directory", "check the path")
    assert str(error) == "sim/out.pvd: no such file or directory. Check the path."


def test_an_input_error_survives_pickling_as_dask_workers_send_it():
    error = pickle.loads(pickle.dumps(InputError("recipe.yaml", "step 2 is unknown", "use coarsen")))
    assert isinstance(error, InputError)
    assert (error.input, error.problem, error.fix) == ("recipe.yaml", "step 2 is unknown", "use coarsen")
