# Roles of the stack's sample apptypes. Each writes under the simulated node's directory (the
# vsop_node_dir fact hack/node-up.sh sets), and records the trusted facts it was classified by.
class role {
  file { "${facts['vsop_node_dir']}/trusted.txt":
    ensure  => file,
    content => "certname=${trusted['certname']} authenticated=${trusted['authenticated']} role=${trusted['extensions']['pp_role']} environment=${trusted['extensions']['pp_environment']} instance=${trusted['extensions']['pp_instance']}\n",
  }
}
