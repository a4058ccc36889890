# The stack's Puppet master classifies by trusted facts only (no external node classifier): the
# role is the apptype part of the server's name, which vsop put into its certificate request
# (pp_role) and vsop's autosign answer checked. A name without a role class gets a failed catalog.
node default {
  $role = $trusted['extensions']['pp_role']
  if $role =~ /\A[a-z][a-z0-9]*\z/ and defined("role::${role}") {
    include "role::${role}"
  } else {
    fail("no role class for pp_role '${role}' of ${trusted['certname']}")
  }
}
