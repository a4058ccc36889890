-- Runs an Argo CD resource health check the way Argo CD does: the object is the global `obj`,
-- the chunk returns a table with status and message. Only the libraries Argo CD opens by default
-- (base, table, string, math) are visible to the check.
-- Usage: lua5.1 argocd-health.lua path/to/health.lua < object.lua   (object.lua: `return { ... }`)
local object = assert(loadstring(io.read("*a"), "=object"))()
local check = assert(loadfile(arg[1]))
local env = {
  obj = object,
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
  select = select, tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
  string = string, table = table, math = math,
}
setfenv(check, env)
local hs = check()
if type(hs) ~= "table" then
  error("health check returned " .. type(hs) .. ", not a table")
end
io.write(tostring(hs.status), "\n", tostring(hs.message))
