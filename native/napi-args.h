/* Argument readers shared by the addon's C files (N-API glue only). */
#ifndef PRUNELAB_NAPI_ARGS_H
#define PRUNELAB_NAPI_ARGS_H
#include <node_api.h>
#include <stddef.h>

/* A JS number, clearing *ok when it is not one. */
static inline double num(napi_env env, napi_value v, int *ok) {
  double d = 0;
  if (napi_get_value_double(env, v, &d) != napi_ok) *ok = 0;
  return d;
}

/* A typed array's data, clearing *ok unless it has the type `want` and at least `need` elements. */
static inline void *typed(napi_env env, napi_value v, napi_typedarray_type want, size_t need, int *ok) {
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, NULL, NULL) != napi_ok || type != want || length < need) *ok = 0;
  return data;
}

/* The call's arguments into argv (room for `want`), throwing `usage` unless there are exactly `want`. */
static inline int exact_args(napi_env env, napi_callback_info info, napi_value *argv, size_t want, const char *usage) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != want) {
    napi_throw_error(env, NULL, usage);
    return 0;
  }
  return 1;
}
#endif
