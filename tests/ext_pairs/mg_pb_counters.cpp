// bump() counts its calls, in three modules built from this one file:
//   mg_pb_static   opts in to an own GIL but counts in a C++ static, one for the whole
//                  process, shared by every interpreter that imports the module: the bug;
//   mg_pb_state    opts in, and counts in state its module's init creates, which runs once
//                  in each interpreter that imports it;
//   mg_pb_refuses  the same as mg_pb_state without the tag: pybind11's default says
//                  Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED.
#include <pybind11/pybind11.h>

#include <atomic>
#include <memory>

namespace py = pybind11;

static std::atomic<long> calls{0};

PYBIND11_MODULE(mg_pb_static, m, py::multiple_interpreters::per_interpreter_gil()) {
    m.def("bump", [] { return ++calls; });
}

PYBIND11_MODULE(mg_pb_state, m, py::multiple_interpreters::per_interpreter_gil()) {
    auto count = std::make_shared<long>(0);
    m.def("bump", [count] { return ++*count; });
}

PYBIND11_MODULE(mg_pb_refuses, m) {
    auto count = std::make_shared<long>(0);
    m.def("bump", [count] { return ++*count; });
}
